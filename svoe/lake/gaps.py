"""`svoe lake gaps`: every interval in which a stream's data may be missing or wrong, from the feed
events each collector recorded in the lake (svoe/feedpod/events.py) and the stream's own rows.

For one collector (writer) and one of its streams:
- it runs from each `start` to its `stop`; after a crash (a `start` with no `stop` before it) its
  run ends at the stream's last event before the new `start`. Between its runs it is `not_running`;
  before its first start and after its last stop it does not answer for the stream at all.
- a `disconnect` of a connection carrying the stream lasts until the stream's next event;
- a book `gap` (cryptofeed dropped the book) lasts until the stream's next snapshot row, when the
  book is valid again.
Over the collectors of a stream (replicas, overlapping rollouts, side-by-side runs), a window is a
gap only if every collector answering for the stream then missed it.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from svoe.api.channels import CHANNELS, FEED_EVENTS

INF = math.inf
Stream = tuple[str, str]  # (channel, symbol)


@dataclass(frozen=True)
class Gap:
    exchange: str
    channel: str
    symbol: str
    kind: str
    start: float
    end: float | None  # None: still open
    detail: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Missing:
    start: float
    end: float  # INF while open
    kind: str
    detail: str


@dataclass
class StreamRows:
    """One writer's rows of one stream: sorted receipt times, and those of snapshot rows."""

    times: list[float] = field(default_factory=list)
    snapshots: list[float] = field(default_factory=list)

    def next_after(self, t: float, snapshots: bool = False) -> float | None:
        seq = self.snapshots if snapshots else self.times
        i = bisect.bisect_right(seq, t)
        return seq[i] if i < len(seq) else None

    def last_before(self, t: float) -> float | None:
        i = bisect.bisect_left(self.times, t)
        return self.times[i - 1] if i else None


def _sessions(events: list[dict[str, Any]], rows: StreamRows) -> list[tuple[float, float]]:
    """The writer's runs as seen by one stream (events in the writer's order)."""
    out: list[tuple[float, float]] = []
    open_at: float | None = None
    for e in events:
        t = e["receipt_timestamp"]
        if e["kind"] == "start":
            if open_at is not None:  # crashed: its run ended with the stream's last event
                last = rows.last_before(t)
                out.append((open_at, max(open_at, last if last is not None else open_at)))
            open_at = t
        elif e["kind"] == "stop" and open_at is not None:
            out.append((open_at, t))
            open_at = None
    if open_at is not None:
        out.append((open_at, INF))
    return out


def _carries(e: dict[str, Any], stream: Stream) -> bool:
    streams = json.loads(e["detail"] or "{}").get("streams")
    return streams is None or [stream[0], stream[1]] in streams


@dataclass
class WriterView:
    """One writer's part in a stream: the span from its first start to the end of its last run
    (it answers for the stream only there), and what it missed within it."""

    first: float
    last: float  # INF while its last run is open
    missing: list[Missing]


def writer_missing(events: list[dict[str, Any]], stream: Stream, rows: StreamRows) -> WriterView | None:
    """What one writer missed of one stream, between its first start and its last run's end."""
    sessions = _sessions(events, rows)
    if not sessions:
        return None
    out = [Missing(end, nxt, "not_running", "collector not running") for (_, end), (nxt, _) in pairwise(sessions)]

    def session_end(t: float) -> float:
        return next((e for s, e in sessions if s <= t <= e), t)

    for e in events:
        t = e["receipt_timestamp"]
        if e["kind"] == "disconnect" and _carries(e, stream):
            back = rows.next_after(t)
            end = back if back is not None and back <= session_end(t) else session_end(t)
            conn = json.loads(e["detail"] or "{}").get("connection", "")
            out.append(Missing(t, end, "disconnect", f"connection {conn} closed"))
        elif e["kind"] == "gap" and (e["event_channel"], e["event_symbol"]) == stream:
            back = rows.next_after(t, snapshots=True)
            end = back if back is not None and back <= session_end(t) else session_end(t)
            seq = json.loads(e["detail"] or "{}").get("seq_before")
            out.append(Missing(t, end, "sequence_gap", f"book reset after sequence {seq}"))
    return WriterView(sessions[0][0], sessions[-1][1], [m for m in out if m.end > m.start])


def merge_writers(per_writer: Sequence[WriterView | None]) -> list[Missing]:
    """The windows that every writer answering for the stream then missed, labelled with what each
    missed them for. Where no writer answers (before the first start, between one collector's
    last stop and another's first start) nobody meant to collect: no gap."""
    views = [v for v in per_writer if v is not None]
    bounds = sorted({b for v in views for m in v.missing for b in (m.start, m.end)})
    segments: list[Missing] = []
    for lo, hi in pairwise(bounds):
        labels: list[Missing] = []
        answering = [v for v in views if v.first <= lo and hi <= v.last]
        for v in answering:
            hit = [m for m in v.missing if m.start <= lo and hi <= m.end]
            if not hit:
                break
            labels.extend(hit)
        else:
            if not answering:
                continue
            kinds = "+".join(sorted({m.kind for m in labels}))
            detail = "; ".join(sorted({m.detail for m in labels if m.detail}))
            if segments and segments[-1].end == lo and (segments[-1].kind, segments[-1].detail) == (kinds, detail):
                segments[-1].end = hi
            else:
                segments.append(Missing(lo, hi, kinds, detail))
    return segments


def collector(row: dict[str, Any]) -> str:
    """Whose copy a row is: its writer, or on rows a compaction rewrote, the original writer."""
    return str(row.get("svoe_origin") or row["svoe_writer"] or "")


def _feed_events_in_order(scanner: Any, exchange: str | None) -> pa.Table | None:
    """Each feed event once (a compaction in progress may hold two copies), numbered in view
    order, which keeps every collector's own order whichever copy is kept."""
    from svoe.lake.reader import duckdb_connection
    from svoe.lake.view import exactly_once_sql

    blocks = scanner.blocks([FEED_EVENTS], exchange)
    if not blocks:
        return None
    con = duckdb_connection()
    con.register("stored", scanner.dataset(FEED_EVENTS, blocks))
    table: pa.Table = con.sql(exactly_once_sql(FEED_EVENTS, "stored", ordered=True)).to_arrow_table()
    order = pa.array(range(table.num_rows), pa.int64())
    table = table.set_column(table.schema.get_field_index("svoe_ms"), "svoe_ms", order)
    return table.set_column(
        table.schema.get_field_index("svoe_seq"), "svoe_seq", pa.repeat(pa.scalar(0, pa.int32()), table.num_rows)
    )


def stream_gaps(
    exchange: str,
    feed_events: pa.Table,
    rows: dict[tuple[str, Stream], StreamRows],
) -> list[Gap]:
    """Gaps of every stream the collectors of `exchange` were started for. `feed_events` holds
    their stored rows; `rows[(writer, stream)]` what each writer stored of each stream."""
    by_writer: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in sorted(feed_events.to_pylist(), key=lambda e: (collector(e), e["svoe_ms"], e["svoe_seq"])):
        by_writer[collector(e)].append(e)
    streams: defaultdict[Stream, list[str]] = defaultdict(list)
    for writer, events in by_writer.items():
        started: set[Stream] = set()
        for e in events:
            if e["kind"] == "start":
                started.update((c, s) for c, s in json.loads(e["detail"] or "{}").get("streams") or [])
        for stream in started:
            streams[stream].append(writer)
    out: list[Gap] = []
    for stream, writers in sorted(streams.items()):
        missing = [writer_missing(by_writer[w], stream, rows.get((w, stream), StreamRows())) for w in writers]
        for m in merge_writers(missing):
            end = None if m.end == INF else m.end
            out.append(Gap(exchange, stream[0], stream[1], m.kind, m.start, end, m.detail))
    return out


def clip(gaps: Iterable[Gap], symbol: str | None, start: float | None, end: float | None) -> list[Gap]:
    return [
        g
        for g in gaps
        if (symbol is None or g.symbol == symbol)
        and (start is None or g.end is None or g.end > start)
        and (end is None or g.start < end)
    ]


def lake_gaps(
    lake: Any, exchange: str | None = None, symbol: str | None = None, start: float | None = None,
    end: float | None = None,
) -> tuple[list[Gap], list[str]]:  # fmt: skip
    """Gaps in a `svoe.lake.Lake`, and the exchanges whose collectors recorded no feed events
    (their lakes predate them: their gaps cannot be told)."""
    scanner = lake.scanner
    events = _feed_events_in_order(scanner, exchange)
    data_channels = [c for c in scanner.channels() if CHANNELS[c].market_data]
    exchanges = sorted({b.key.exchange for b in scanner.blocks(data_channels, exchange)})
    found: list[Gap] = []
    silent: list[str] = []
    for ex in exchanges:
        ex_events = None if events is None else events.filter(pc.equal(events["exchange"], ex))
        if ex_events is None or ex_events.num_rows == 0:
            silent.append(ex)
            continue
        rows: dict[tuple[str, Stream], StreamRows] = {}
        for channel in data_channels:
            blocks = scanner.blocks([channel], ex, [symbol] if symbol else None)
            if not blocks:
                continue
            book = CHANNELS[channel].is_book
            cols = ["svoe_writer", "svoe_origin", "symbol", "receipt_timestamp", *(["snapshot"] if book else [])]
            table = scanner.dataset(channel, blocks).to_table(columns=cols)
            for r in table.to_pylist():
                sr = rows.setdefault((collector(r), (channel, r["symbol"])), StreamRows())
                sr.times.append(r["receipt_timestamp"])
                if book and r["snapshot"]:
                    sr.snapshots.append(r["receipt_timestamp"])
        for sr in rows.values():
            sr.times.sort()
            sr.snapshots.sort()
        found += clip(stream_gaps(ex, ex_events, rows), symbol, start, end)
    return found, silent


def _when(t: float | None) -> str:
    import datetime as dt

    return "open" if t is None else dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def summary(gaps: Sequence[Gap]) -> str:
    """One line per gap kind, as `svoe run` ends (e.g. 1 sequence gap: BINANCE l2_book BTC-USDT at ...)."""
    if not gaps:
        return "no gaps: every stream was covered from start to stop"
    by_kind: defaultdict[str, list[Gap]] = defaultdict(list)
    for g in gaps:
        by_kind[g.kind].append(g)
    lines = []
    for kind, items in sorted(by_kind.items()):
        shown = ", ".join(f"{g.exchange} {g.channel} {g.symbol} at {_when(g.start)}" for g in items[:3])
        more = f" and {len(items) - 3} more" if len(items) > 3 else ""
        lines.append(f"{len(items)} {kind.replace('_', ' ')}{'s' if len(items) > 1 else ''}: {shown}{more}")
    return "\n".join(lines) + "\n(svoe lake gaps LAKE lists them)"


def render_table(gaps: Sequence[Gap]) -> str:
    if not gaps:
        return "no gaps\n"
    rows = [(g.exchange, g.channel, g.symbol, g.kind, _when(g.start), _when(g.end), g.detail) for g in gaps]
    head = ("exchange", "channel", "symbol", "kind", "start", "end", "detail")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(6)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:6], widths, strict=True)) + "  " + r[6] for r in [head, *rows]]
    return "\n".join(lines) + "\n"
