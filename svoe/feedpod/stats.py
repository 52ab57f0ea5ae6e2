"""The collector's data-health summary, served as JSON at `/stats` (docs/contracts.md).

The operator polls it every 15-30 s per feed pod, so it is computed from counters the collector
keeps anyway: the stream writer's per-stream counts (updated once per Redis batch, not per
event), a one-second sampler of the total for the rate, and the times of the rare gap-like feed
events. Everything here is a pure function of those counters and an injected clock; the HTTP
handler in health.py only serializes what `stats_document` returns.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from svoe.api.contract import backlog_field, stats_key, stream_key

RATE_WINDOW_SECONDS = 60.0
GAP_WINDOW_SECONDS = 3600.0
# The rate needs one sample per second at most: finer samples only add memory.
SAMPLE_EVERY_SECONDS = 1.0
BACKLOG_TIMEOUT_SECONDS = 2.0


def rfc3339(ts: float | None) -> str | None:
    """Epoch seconds as RFC 3339 UTC with milliseconds (`2026-12-02T01:02:03.456Z`)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- events per second --------------------------------------------------------------------------
def events_per_second(
    samples: Sequence[tuple[float, int]], now: float, count: int, window: float = RATE_WINDOW_SECONDS
) -> float:
    """The rate of `count` over the last `window` seconds: from the oldest sample inside the
    window (the start-up sample while the process is younger than the window) to `now`."""
    base = next((s for s in samples if s[0] >= now - window), samples[-1] if samples else None)
    if base is None or now <= base[0]:
        return 0.0
    return max(0, count - base[1]) / (now - base[0])


@dataclass
class RateWindow:
    """(monotonic time, total count) samples spanning the rate window, one per second at most."""

    window: float = RATE_WINDOW_SECONDS
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def sample(self, now: float, count: int) -> None:
        if self.samples and now - self.samples[-1][0] < SAMPLE_EVERY_SECONDS:
            return
        self.samples.append((now, count))
        # One sample older than the window is kept: the base when the sampler was late.
        while len(self.samples) > 2 and self.samples[1][0] < now - self.window:
            self.samples.popleft()

    def rate(self, now: float, count: int) -> float:
        return events_per_second(self.samples, now, count, self.window)


# ---- gaps in the last hour ----------------------------------------------------------------------
def count_since(times: Iterable[float], since: float) -> int:
    return sum(1 for t in times if t >= since)


@dataclass
class GapWindow:
    """Monotonic times of the gap-like feed events of the last hour. Gaps are rare (a storm of
    reconnects once a second is 3600 floats), so exact times cost less than buckets' bookkeeping."""

    window: float = GAP_WINDOW_SECONDS
    times: deque[float] = field(default_factory=deque)

    def record(self, now: float) -> None:
        self.times.append(now)
        self._prune(now)

    def count(self, now: float) -> int:
        self._prune(now)
        return count_since(self.times, now - self.window)

    def _prune(self, now: float) -> None:
        while self.times and self.times[0] < now - self.window:
            self.times.popleft()


# ---- backlog ------------------------------------------------------------------------------------
def backlog_total(values: Sequence[Any]) -> int:
    """Events written and not yet flushed, from the stats hash's backlog field of each stream
    (contract.backlog_field): a stream nothing was written to yet has none."""
    return sum(int(v) for v in values if v is not None)


async def stream_backlogs(client: Any, exchange: str, keys: Sequence[str]) -> list[Any]:
    """Each stream's backlog counter (HMGET replies: nil for a stream never written); raises when
    Redis does not answer."""
    return list(await client.hmget(stats_key(exchange), [backlog_field(k) for k in keys]))


async def read_backlog(client: Any, exchange: str, keys: Sequence[str]) -> int | None:
    """The backlog of all streams in one round trip; None when Redis does not answer."""
    try:
        values = await asyncio.wait_for(stream_backlogs(client, exchange, keys), BACKLOG_TIMEOUT_SECONDS)
    except Exception:  # unreachable, timed out, or the connection broke: the endpoint still answers
        return None
    return backlog_total(values)


# ---- the document -------------------------------------------------------------------------------
def stream_entries(
    streams: Sequence[tuple[str, str]], events: Mapping[str, int], last: Mapping[str, float], exchange: str
) -> list[dict[str, Any]]:
    """One entry per market-data stream of the feed, in spec order, zeros for a silent stream."""
    out = []
    for channel, symbol in streams:
        key = stream_key(exchange, channel, symbol)
        out.append(
            {
                "channel": channel,
                "symbol": symbol,
                "lastEventTime": rfc3339(last.get(key)),
                "events": events.get(key, 0),
            }
        )
    return out


def stats_document(
    *,
    writer: str,
    started_at: float,
    events: Mapping[str, int],
    last: Mapping[str, float],
    streams: Sequence[tuple[str, str]],
    exchange: str,
    events_per_second: float,
    backlog: int | None,
    gaps_last_hour: int,
) -> dict[str, Any]:
    """The `/stats` JSON. `events` and `last` are per stream key (the buffer's names); `last`
    holds epoch seconds, `started_at` is the process start in epoch seconds. Both count market
    data only: the writer leaves the feed's own events out of them."""
    newest = max(last.values(), default=None)
    return {
        "writer": writer,
        "lastEventTime": rfc3339(newest),
        "eventsPerSecond": round(events_per_second, 1),
        "events": sum(events.values()),
        "backlog": backlog,
        "gapsLastHour": gaps_last_hour,
        "streams": stream_entries(streams, events, last, exchange),
        "since": rfc3339(started_at),
    }
