"""`svoe lake report`: per exchange and symbol, what the lake holds and how complete it is.

One task per (exchange, symbol), run through svoe/lake/jobs.py (a process pool or Dask). Each
reads the symbol's partitions once and returns plain numbers: per channel the exactly-once events
(as `svoe lake stats` counts them), the stored rows (as `svoe lake stats --raw`), first and last
receipt, events per minute, and the symbol's gaps (as `svoe lake gaps` lists them). report_html.py
draws the page from these.

Coverage of a channel is the share of its span (first event to last event, stretched over its
gaps) that no gap covers.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from svoe.api.channels import CHANNELS, FEED_EVENTS, FEED_SYMBOL
from svoe.lake.gaps import Gap, lake_gaps
from svoe.lake.scan import LakeError, LakeScanner
from svoe.lake.view import exactly_once_counts_sql, exactly_once_sql

MINUTE = 60.0


@dataclass(frozen=True)
class ReportTask:
    url: str
    exchange: str
    symbol: str
    date: str | None = None


@dataclass
class ChannelReport:
    channel: str
    events: int  # exactly once
    stored: int  # rows
    first: float
    last: float
    per_minute: list[tuple[float, int]]  # (minute start, events)
    gaps: list[Gap] = field(default_factory=list)
    # The report's window: with --date its day; an open gap runs to its end (or to now).
    window: tuple[float | None, float | None] = (None, None)

    def gap_bounds(self, g: Gap) -> tuple[float, float]:
        lo, hi = self.window
        end = g.end if g.end is not None else (hi if hi is not None else time.time())
        return (g.start if lo is None else max(lo, g.start)), (end if hi is None else min(hi, end))

    @property
    def duplicate_rate(self) -> float:
        """Share of stored rows that are extra copies of an event (replicas, reruns)."""
        return 0.0 if not self.stored else 1.0 - self.events / self.stored

    @property
    def span(self) -> tuple[float, float]:
        bounds = [self.gap_bounds(g) for g in self.gaps]
        return min([self.first, *(a for a, _ in bounds)]), max([self.last, *(b for _, b in bounds)])

    @property
    def coverage(self) -> float:
        lo, hi = self.span
        if hi <= lo:
            return 0.0 if self.gaps else 1.0
        missing = 0.0
        edge = lo
        for a, b in sorted(self.gap_bounds(g) for g in self.gaps):
            start, end = max(a, edge), min(hi, b)
            if end > start:
                missing += end - start
                edge = end
        return max(0.0, 1.0 - missing / (hi - lo))


@dataclass
class SymbolReport:
    exchange: str
    symbol: str
    channels: list[ChannelReport]
    resyncs: int
    book_gaps: int

    @property
    def rows(self) -> int:  # what the job runner shows as progress
        return sum(c.stored for c in self.channels)

    @property
    def gaps(self) -> list[Gap]:
        return [g for c in self.channels for g in c.gaps]


@dataclass
class ExchangeReport:
    exchange: str
    malformed: int
    disconnects: int
    collectors: int


def report_tasks(url: str, date: str | None = None) -> list[ReportTask]:
    scanner = LakeScanner(url)
    dates = None if date is None else {date}
    blocks = scanner.blocks(None, dates=dates)
    pairs = sorted({(b.key.exchange, b.key.symbol) for b in blocks if CHANNELS[b.key.channel].market_data})
    if not pairs:
        where = f" on {date}" if date else ""
        raise LakeError(f"the lake {url} holds no market data{where}: nothing to report")
    return [ReportTask(url, ex, sym, date) for ex, sym in pairs]


def _day_bounds(date: str | None) -> tuple[float | None, float | None]:
    if date is None:
        return None, None
    day = dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC)
    return day.timestamp(), (day + dt.timedelta(days=1)).timestamp()


def symbol_report(task: ReportTask) -> SymbolReport:
    from svoe.lake import Lake
    from svoe.lake.reader import duckdb_connection

    lake = Lake(task.url)
    scanner = lake.scanner
    t0, t1 = _day_bounds(task.date)
    gaps, _ = lake_gaps(lake, task.exchange, task.symbol, t0, t1)
    dates = None if task.date is None else {task.date}
    channels: list[ChannelReport] = []
    for channel in scanner.channels():
        if not CHANNELS[channel].market_data:
            continue
        blocks = scanner.blocks([channel], task.exchange, [task.symbol], dates)
        if not blocks:
            continue
        con = duckdb_connection()
        con.register("stored", scanner.dataset(channel, blocks))
        counted = con.sql(exactly_once_counts_sql(channel, "stored")).fetchall()
        events = sum(int(n) for _, _, n in counted)
        stored = sum(scanner.row_count(b) for b in blocks)
        per_minute = con.sql(
            f"SELECT floor(receipt_timestamp / {MINUTE}) * {MINUTE} AS m, count(*) AS n "
            f"FROM ({exactly_once_sql(channel, 'stored')}) GROUP BY m ORDER BY m"
        ).fetchall()
        ((first, last),) = con.sql("SELECT min(receipt_timestamp), max(receipt_timestamp) FROM stored").fetchall()
        channels.append(
            ChannelReport(
                channel,
                events,
                stored,
                float(first),
                float(last),
                [(float(m), int(n)) for m, n in per_minute],
                [g for g in gaps if g.channel == channel],
                (t0, t1),
            )
        )
    resyncs, book_gaps = _symbol_feed_events(scanner, task)
    return SymbolReport(task.exchange, task.symbol, channels, resyncs, book_gaps)


def _feed_events_sql(scanner: LakeScanner, exchange: str, date: str | None, select: str, where: str) -> list[tuple]:  # type: ignore[type-arg]
    from svoe.lake.reader import duckdb_connection

    dates = None if date is None else {date}
    blocks = scanner.blocks([FEED_EVENTS], exchange, [FEED_SYMBOL], dates)
    if not blocks:
        return []
    con = duckdb_connection()
    con.register("stored", scanner.dataset(FEED_EVENTS, blocks))
    rows: list[tuple] = con.sql(  # type: ignore[type-arg]
        f"SELECT {select} FROM ({exactly_once_sql(FEED_EVENTS, 'stored')}) WHERE {where}"
    ).fetchall()
    return rows


def _symbol_feed_events(scanner: LakeScanner, task: ReportTask) -> tuple[int, int]:
    sym = task.symbol.replace("'", "''")
    rows = _feed_events_sql(
        scanner, task.exchange, task.date,
        "count(*) FILTER (WHERE kind = 'resync'), count(*) FILTER (WHERE kind = 'gap')",
        f"event_symbol = '{sym}'",
    )  # fmt: skip
    return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)


def exchange_reports(url: str, exchanges: Sequence[str], date: str | None) -> list[ExchangeReport]:
    """Feed-wide counts: malformed messages (not tied to a symbol), disconnects, collectors."""
    scanner = LakeScanner(url)
    out = []
    for ex in exchanges:
        rows = _feed_events_sql(
            scanner, ex, date,
            "count(*) FILTER (WHERE kind = 'malformed'), count(*) FILTER (WHERE kind = 'disconnect'), "
            "count(DISTINCT coalesce(svoe_origin, svoe_writer))",
            "true",
        )  # fmt: skip
        malformed, disconnects, collectors = rows[0] if rows else (0, 0, 0)
        out.append(ExchangeReport(ex, int(malformed), int(disconnects), int(collectors)))
    return out
