"""`svoe bench lake`: deriving fixed-interval book snapshots from l2_book rows, svoe against plain Python.

A seeded synthetic l2_book Parquet file is written to a temporary directory: an initial snapshot of
1000 levels per side on a 0.01 tick grid, then delta rows of 1-20 levels near the touch (some of
them deletes, a few of absent levels) while the mid price random-walks, receipt times spread over an
hour, and a full-book snapshot row every `SNAPSHOT_EVERY` rows (as `spec.book.snapshotInterval`
writes them). In the same run, best of `repeat`, two implementations do the same job, Parquet in,
Parquet out:
  svoe      svoe.lake.books.snapshots (dense price ids; batched numpy, no Python per tick)
  baseline  a plain-Python dict rebuild: to_pylist, dict per side, heapq top-N at each tick
Both outputs are compared. Level updates/s = level entries in all rows / seconds, by wall clock and
per CPU-second (time.process_time: CPU of this process, all threads; both run in it in turn).

Entry points (the CLI wiring lives elsewhere):
    bench_lake(rows=200_000, depth=10, interval="1s", repeat=3, seed=0) -> dict   the measurements
    bench_main(json_out=False, rows=200_000, repeat=3, depth=10, interval="1s") -> int
        prints a table (or one JSON object with json_out) and returns the exit status, 0
Also runnable as `python -m svoe.bench.lake [--json] [--rows N] [--repeat N]`.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from svoe.api.durations import parse_interval
from svoe.lake.books import snapshot_schema, snapshots, tick_times
from svoe.lake.schema import CHANNEL_SCHEMAS

DEFAULT_ROWS = 200_000
SNAPSHOT_EVERY = 5_000
BOOK_LEVELS = 1_000
# Prices are integer ticks / 100, the double nearest the decimal string, as the lake stores it.
TICKS_PER_UNIT = 100
HOUR = 3_600.0
T0 = 1_700_000_000.0
READ_COLUMNS = ["receipt_timestamp", "snapshot", "bid_price", "bid_size", "ask_price", "ask_size"]
_LEVELS = pa.list_(pa.float64())
# The columns used here, as the lake types them.
SCHEMA = pa.schema(
    [
        CHANNEL_SCHEMAS["l2_book"].field(n)
        for n in ("svoe_id", "timestamp", "receipt_timestamp", "sequence_number", *READ_COLUMNS[1:])
    ]
)


# ---- the synthetic input ---------------------------------------------------------------------
def synth_l2_book(rows: int, seed: int = 0) -> pa.Table:
    """A deterministic l2_book table of one symbol; see the module docstring."""
    rng = np.random.default_rng(seed)
    # Prices are integer ticks while generating, so one level is always the same double.
    mid = (3_000_000 + np.cumsum(rng.normal(0.0, 0.4, rows)).round()).astype(np.int64).tolist()
    counts = rng.integers(1, 21, rows)
    total = int(counts.sum())
    starts = np.r_[0, np.cumsum(counts)].tolist()
    is_bid = (rng.random(total) < 0.5).tolist()
    away = np.minimum(rng.geometric(1 / 40, total), 1_500).tolist()
    sizes = np.where(rng.random(total) < 0.15, 0.0, np.round(rng.lognormal(0.0, 1.0, total), 4)).tolist()
    receipt = np.sort(T0 + rng.random(rows) * HOUR).round(6)
    receipt[0] = T0

    books: tuple[dict[int, float], dict[int, float]] = ({}, {})
    for side, sign in zip(books, (-1, 1), strict=True):
        # 1000 levels per side, with a few empty ticks between them.
        initial = mid[0] + sign * np.cumsum(rng.geometric(0.7, BOOK_LEVELS))
        side.update(zip(initial.tolist(), np.round(rng.lognormal(0.0, 1.0, BOOK_LEVELS), 4).tolist(), strict=True))
    snapshot = np.zeros(rows, dtype=bool)
    columns: list[list[list[float]]] = [[], [], [], []]  # bid_price, bid_size, ask_price, ask_size
    for r in range(rows):
        row: tuple[list[tuple[int, float]], list[tuple[int, float]]] = ([], [])
        if r:
            # The exchange removes the levels the mid moved through, so the book never crosses.
            if mid[r] > mid[r - 1]:
                row[1].extend((t, 0.0) for t in range(mid[r - 1] + 1, mid[r] + 1) if t in books[1])
            elif mid[r] < mid[r - 1]:
                row[0].extend((t, 0.0) for t in range(mid[r], mid[r - 1]) if t in books[0])
            for j in range(starts[r], starts[r + 1]):
                bid = is_bid[j]
                row[0 if bid else 1].append((mid[r] - away[j] if bid else mid[r] + away[j], sizes[j]))
            for side, levels in zip(books, row, strict=True):
                for t, size in levels:
                    if size == 0.0:
                        side.pop(t, None)
                    else:
                        side[t] = size
        if r % SNAPSHOT_EVERY == 0:
            # A snapshot row holds the book after its event, to the stored depth; readers reset to it.
            snapshot[r] = True
            top = (sorted(books[0], reverse=True)[:BOOK_LEVELS], sorted(books[1])[:BOOK_LEVELS])
            books = ({t: books[0][t] for t in top[0]}, {t: books[1][t] for t in top[1]})
            row = ([(t, books[0][t]) for t in top[0]], [(t, books[1][t]) for t in top[1]])
        for k, levels in enumerate(row):
            columns[2 * k].append([t / TICKS_PER_UNIT for t, _ in levels])
            columns[2 * k + 1].append([size for _, size in levels])
    arrays = [
        pa.array([f"{int(t * 1000)}-{i}" for i, t in enumerate(receipt.tolist())]),
        pa.array(receipt - 0.005),
        pa.array(receipt),
        pa.array(np.arange(rows, dtype=np.int64) + 1),
        pa.array(snapshot),
        *(pa.array(c, _LEVELS) for c in columns),
    ]
    return pa.table(arrays, schema=SCHEMA)


def level_entries(table: pa.Table) -> int:
    return sum(len(table.column(c).combine_chunks().flatten()) for c in ("bid_price", "ask_price"))


# ---- the two implementations, Parquet to Parquet -------------------------------------------
Implementation = Callable[[Path, Path, int, float], int]


def svoe_snapshots(src: Path, dst: Path, depth: int, interval: float) -> int:
    table = pq.read_table(src, columns=READ_COLUMNS)
    out = snapshots(table, depth, interval)
    pq.write_table(out, dst, compression="zstd")
    return int(out.num_rows)


def baseline_snapshots(src: Path, dst: Path, depth: int, interval: float) -> int:
    """What one writes without a kernel: Python objects, a dict per side, a top-N per tick."""
    table = pq.read_table(src, columns=READ_COLUMNS)
    ts = table.column("receipt_timestamp").to_pylist()
    snap = table.column("snapshot").to_pylist()
    bp, bs = table.column("bid_price").to_pylist(), table.column("bid_size").to_pylist()
    ap, asz = table.column("ask_price").to_pylist(), table.column("ask_size").to_pylist()
    first = snap.index(True)
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    out: list[list[float]] = []
    i, n, nan = first, len(ts), math.nan
    for tick in tick_times(ts[first], ts[-1], interval).tolist():
        while i < n and ts[i] <= tick:
            if snap[i]:
                bids.clear()
                asks.clear()
            for book, prices, sizes in ((bids, bp[i], bs[i]), (asks, ap[i], asz[i])):
                for p, s in zip(prices, sizes, strict=True):
                    if s == 0.0:
                        book.pop(p, None)
                    else:
                        book[p] = s
            i += 1
        top_b = heapq.nlargest(depth, bids)
        top_a = heapq.nsmallest(depth, asks)
        pad_b, pad_a = [nan] * (depth - len(top_b)), [nan] * (depth - len(top_a))
        out.append(
            [tick, *top_b, *pad_b, *(bids[p] for p in top_b), *pad_b, *top_a, *pad_a, *(asks[p] for p in top_a), *pad_a]
        )
    schema = snapshot_schema(depth)
    result = pa.table([pa.array(col, pa.float64()) for col in zip(*out, strict=True)], schema=schema)
    pq.write_table(result, dst, compression="zstd")
    return int(result.num_rows)


# ---- measuring -------------------------------------------------------------------------------
def _best_of(repeat: int, impl: Implementation, src: Path, dst: Path, depth: int, interval: float) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        impl(src, dst, depth, interval)
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    best = min(runs)
    return {"wall_seconds": round(best[0], 4), "cpu_seconds": round(best[1], 4)}


def bench_lake(
    rows: int = DEFAULT_ROWS, depth: int = 10, interval: str = "1s", repeat: int = 3, seed: int = 0
) -> dict[str, Any]:
    seconds = parse_interval(interval)
    with tempfile.TemporaryDirectory(prefix="svoe-bench-lake-") as tmp:
        src = Path(tmp) / "l2_book.parquet"
        table = synth_l2_book(rows, seed)
        # As the lake writes blocks (svoe/feedpod/lake_writer.py).
        pq.write_table(table, src, compression="zstd", compression_level=3, use_dictionary=True)
        entries = level_entries(table)
        result: dict[str, Any] = {
            "rows": rows,
            "snapshot_rows": _count_true(table.column("snapshot")),
            "level_updates": entries,
            "input_bytes": src.stat().st_size,
            "depth": depth,
            "interval": interval,
            "repeat": repeat,
        }
        implementations: list[tuple[str, Implementation]] = [("svoe", svoe_snapshots), ("baseline", baseline_snapshots)]
        for name, impl in implementations:
            timing = _best_of(repeat, impl, src, Path(tmp) / f"{name}.parquet", depth, seconds)
            timing["level_updates_per_second"] = round(entries / timing["wall_seconds"])
            timing["level_updates_per_cpu_second"] = round(entries / timing["cpu_seconds"])
            result[name] = timing
        svoe_out, base_out = pq.read_table(Path(tmp) / "svoe.parquet"), pq.read_table(Path(tmp) / "baseline.parquet")
        result["snapshots"] = svoe_out.num_rows
        result["outputs_equal"] = svoe_out.equals(base_out)
    result["speedup_per_cpu_second"] = round(result["baseline"]["cpu_seconds"] / result["svoe"]["cpu_seconds"], 2)
    return result


def _count_true(column: pa.ChunkedArray) -> int:
    return int(np.count_nonzero(column.to_numpy(zero_copy_only=False)))


def bench_main(
    json_out: bool = False, rows: int = DEFAULT_ROWS, repeat: int = 3, depth: int = 10, interval: str = "1s"
) -> int:
    result = bench_lake(rows=rows, depth=depth, interval=interval, repeat=repeat)
    if json_out:
        print(json.dumps(result))
        return 0
    print(
        f"{result['rows']} l2_book rows ({result['snapshot_rows']} snapshot rows), {result['level_updates']} level "
        f"updates -> {result['snapshots']} snapshots of {depth} levels every {interval}; best of {repeat}"
    )
    print(f"{'':10s} {'wall s':>8s} {'cpu s':>8s} {'updates/s':>12s} {'updates/cpu-s':>14s}")
    for name in ("svoe", "baseline"):
        r = result[name]
        print(
            f"{name:10s} {r['wall_seconds']:8.3f} {r['cpu_seconds']:8.3f} "
            f"{r['level_updates_per_second']:12,d} {r['level_updates_per_cpu_second']:14,d}"
        )
    print(f"speedup (cpu): {result['speedup_per_cpu_second']}x; outputs equal: {result['outputs_equal']}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--interval", default="1s")
    args = parser.parse_args()
    raise SystemExit(bench_main(args.json, args.rows, args.repeat, args.depth, args.interval))
