"""Data health, pure: a feed pod's `/stats` answer -> the figures of the DataFeed status.

A replica's figures are its serving pod's; a shard's merge its replicas' the way the lake's
exactly-once view merges their data (the newest event and the best rate of any replica, the
fewest gaps, since a window is a gap only if every replica missed it, and the largest backlog);
the DataFeed's add its shards' rates, gaps and backlogs, and take the stalest shard's newest
event, so that one glance at `kubectl get df` shows the shard that stopped.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from svoe.api.status import Health
from svoe.api.timestamps import parse_rfc3339


@dataclass(frozen=True)
class PodStats:
    """One `/stats` answer of a collector (docs/contracts.md), as read at `read_at` (unix time)."""

    read_at: float
    last_event_time: str | None
    events_per_second: float | None
    backlog: int | None
    gaps_last_hour: int | None
    since: str | None = None  # when the collector started


def stats_number(doc: Mapping[str, Any], key: str) -> float | None:
    """A number of a `/stats` answer; None when missing or of the wrong type (a newer or older pod)."""
    v = doc.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def stats_time(doc: Mapping[str, Any], key: str) -> str | None:
    """An RFC 3339 time of a `/stats` answer; None when missing or not a time."""
    v = doc.get(key)
    return v if isinstance(v, str) and parse_rfc3339(v) is not None else None


def parse_stats(doc: Mapping[str, Any], read_at: float) -> PodStats:
    """The answer's fields, each None when missing or of the wrong type (a newer or older pod)."""

    def number(key: str) -> float | None:
        return stats_number(doc, key)

    def text(key: str) -> str | None:
        return stats_time(doc, key)

    rate, backlog, gaps = number("eventsPerSecond"), number("backlog"), number("gapsLastHour")
    return PodStats(
        read_at=read_at,
        last_event_time=text("lastEventTime"),
        events_per_second=None if rate is None else round(rate, 1),
        backlog=None if backlog is None else int(backlog),
        gaps_last_hour=None if gaps is None else int(gaps),
        since=text("since"),
    )


def pod_health(stats: PodStats | None) -> Health:
    if stats is None:
        return Health()
    return Health(
        last_event_time=stats.last_event_time,
        events_per_second=stats.events_per_second,
        backlog=stats.backlog,
        gaps_last_hour=stats.gaps_last_hour,
    )


def _newest(times: Iterable[str | None]) -> str | None:
    known = [(parse_rfc3339(t), t) for t in times if t]
    return max((k for k in known if k[0] is not None), default=(None, None))[1]


def shard_health(replicas: Iterable[Health]) -> Health:
    reported = [h for h in replicas if h.events_per_second is not None or h.last_event_time is not None]
    if not reported:
        return Health()
    rates = [h.events_per_second for h in reported if h.events_per_second is not None]
    gaps = [h.gaps_last_hour for h in reported if h.gaps_last_hour is not None]
    backlogs = [h.backlog for h in reported if h.backlog is not None]
    return Health(
        last_event_time=_newest(h.last_event_time for h in reported),
        events_per_second=max(rates) if rates else None,
        gaps_last_hour=min(gaps) if gaps else None,
        backlog=max(backlogs) if backlogs else None,
    )


def feed_health(shards: list[Health]) -> Health:
    """Totals over shards; None while any shard has not reported (a partial sum would mislead)."""
    if not shards or any(h.events_per_second is None for h in shards):
        return Health()
    known = [(t, h) for h in shards if h.last_event_time and (t := parse_rfc3339(h.last_event_time)) is not None]
    stalest = min(known, key=lambda x: x[0])[1] if len(known) == len(shards) else None
    return Health(
        last_event_time=stalest.last_event_time if stalest else None,
        events_per_second=round(sum(h.events_per_second or 0.0 for h in shards), 1),
        gaps_last_hour=sum(h.gaps_last_hour or 0 for h in shards),
        backlog=sum(h.backlog or 0 for h in shards),
    )


def event_age(health: Health, since: str | None, now: datetime.datetime) -> float | None:
    """Seconds since the newest event (or, with none yet, since the collector started); None if unknown."""
    t = parse_rfc3339(health.last_event_time) if health.last_event_time else None
    if t is None and since:
        t = parse_rfc3339(since)
    return None if t is None else (now - t).total_seconds()


@dataclass(frozen=True)
class FeaturizerStats:
    """One `/stats` answer of a FeatureSet's featurizer (docs/contracts.md), as read at `read_at`."""

    read_at: float
    rows_per_second: float | None
    last_tick: str | None
    lag_seconds: float | None
    stale: bool | None
    last_source_event: str | None
    late_events: int | None


def parse_featurizer_stats(doc: Mapping[str, Any], read_at: float) -> FeaturizerStats:
    rate, lag, late = (stats_number(doc, k) for k in ("rowsPerSecond", "lagSeconds", "lateEvents"))
    stale = doc.get("stale")
    return FeaturizerStats(
        read_at=read_at,
        rows_per_second=None if rate is None else round(rate, 1),
        last_tick=stats_time(doc, "lastTick"),
        lag_seconds=None if lag is None else round(lag, 1),
        stale=stale if isinstance(stale, bool) else None,
        last_source_event=stats_time(doc, "lastSourceEvent"),
        late_events=None if late is None else int(late),
    )
