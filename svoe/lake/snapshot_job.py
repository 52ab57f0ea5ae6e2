"""`svoe lake snapshots` over many symbols and days: one task per (symbol, date partition).

Ticks are multiples of the interval aligned to the epoch (books.tick_times), so cutting a range at
UTC midnights gives each day exactly its own ticks: the days' tables, concatenated in order, are
the table of the whole range, whether they ran in one process, on a pool or on Dask. Each task
rebuilds its first book from the latest snapshot row before its day (Lake.snapshots), so no task
depends on another.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from svoe.lake.scan import LakeError


@dataclass(frozen=True)
class SnapshotTask:
    url: str
    exchange: str
    symbol: str
    date: str
    depth: int
    interval: str
    start: float | None  # None: from the symbol's first book (first day only)
    end: float | None  # None: to the symbol's last event (last day only)


@dataclass
class SnapshotPart:
    task: SnapshotTask
    table: pa.Table

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)


def _day(date: str) -> tuple[float, float]:
    d = dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC)
    return d.timestamp(), (d + dt.timedelta(days=1)).timestamp()


def snapshot_tasks(
    url: str,
    exchange: str,
    symbols: Sequence[str] | None,
    depth: int,
    interval: str,
    start: float | None,
    end: float | None,
) -> list[SnapshotTask]:
    """Tasks per symbol (default: every l2_book symbol of the exchange) and per date partition
    that the range [start, end] touches."""
    from svoe.lake import Lake

    lake = Lake(url)
    blocks = lake._blocks("l2_book", exchange, symbols, None)
    chosen = sorted(set(symbols) if symbols else {b.key.symbol for b in blocks})
    tasks = []
    for sym in chosen:
        dates = sorted({b.key.date for b in blocks if b.key.symbol == sym})
        kept = []
        for date in dates:
            lo, hi = _day(date)
            if (start is not None and hi <= start) or (end is not None and lo > end):
                continue
            kept.append((date, lo, hi))
        for i, (date, lo, hi) in enumerate(kept):
            t0 = start if i == 0 else (lo if start is None else max(start, lo))
            last_day = math.nextafter(hi, -math.inf)
            t1 = end if i == len(kept) - 1 else (last_day if end is None else min(end, last_day))
            tasks.append(SnapshotTask(url, exchange, sym, date, depth, interval, t0, t1))
    if not tasks:
        span = lake.time_span("l2_book", exchange, chosen)
        held = f"it holds them from {_iso(span[0])} to {_iso(span[1])}" if span else "it holds none"
        since = "the start" if start is None else _iso(start)
        window = f"between {since} and {'the end' if end is None else _iso(end)}"
        raise LakeError(f"no {exchange} {', '.join(chosen)} l2_book {window}: {held}")
    return tasks


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def snapshot_part(task: SnapshotTask) -> SnapshotPart:
    from svoe.lake import Lake

    try:
        table = Lake(task.url).snapshots(task.exchange, task.symbol, task.depth, task.interval, task.start, task.end)
    except LakeError as err:
        if "holds them from" not in str(err):
            raise
        table = pa.table({})  # a day without a book in range: no ticks
    return SnapshotPart(task, table)


def write_parts(parts: Sequence[SnapshotPart], out: str, one_file: bool) -> dict[str, int]:
    """Concatenate each symbol's days in order and write them: to `out` itself for one symbol, else
    to `out/SYMBOL.parquet`. Returns the rows written per symbol."""
    import pyarrow.parquet as pq

    by_symbol: dict[str, list[pa.Table]] = {}
    for p in parts:
        if p.table.num_columns:
            by_symbol.setdefault(p.task.symbol, []).append(p.table)
    if not by_symbol:
        raise LakeError("no book at any tick of that range")
    if not one_file:
        os.makedirs(out, exist_ok=True)
    written = {}
    for sym, tables in by_symbol.items():
        table = pa.concat_tables(tables)
        pq.write_table(table, out if one_file else os.path.join(out, f"{sym}.parquet"), compression="zstd")
        written[sym] = int(table.num_rows)
    return written
