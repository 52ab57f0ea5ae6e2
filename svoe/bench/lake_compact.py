"""`svoe bench lake --compact`: file count and read times of one partition before and after
`svoe lake compact`.

The synthetic l2_book rows of svoe/bench/lake.py are written through the feed pod's
LocalLakeWriter as `blocks` small blocks of one writer: what a day of 30 s flushes leaves (2,880
files per stream). Each read is timed in this process, median of `repeat`, before compaction and
after, on the same rows: the whole partition through the exactly-once view, a 5-minute window,
and the exactly-once count behind `svoe lake stats`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from svoe.bench.lake import synth_l2_book
from svoe.bench.lake_seek import _as_lake_rows, write_lake


def _median(fn: Callable[[], object], repeat: int) -> float:
    seconds = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t)
    return statistics.median(seconds)


def _reads(url: str, t0: float, repeat: int) -> dict[str, float]:
    from svoe.lake import Lake
    from svoe.lake.stats import lake_counts

    return {
        "read_partition_s": round(_median(lambda: Lake(url).read("l2_book", "BENCH", ["BTC-USD"]), repeat), 4),
        "read_5min_s": round(
            _median(lambda: Lake(url).read("l2_book", "BENCH", ["BTC-USD"], t0 + 1800, t0 + 2100), repeat), 4
        ),
        "stats_s": round(_median(lambda: lake_counts(url), repeat), 4),
    }


def bench_compact(rows: int = 200_000, blocks: int = 2_880, repeat: int = 3) -> dict[str, Any]:
    from svoe.lake.compact import CompactTask, Partition, compact_partition

    table = _as_lake_rows(synth_l2_book(rows))
    t0 = float(table["receipt_timestamp"][0].as_py())
    out: dict[str, Any] = {"rows": rows}
    with tempfile.TemporaryDirectory(prefix="svoe-compact-") as tmp:
        url = str(Path(tmp) / "lake")
        out["files_before"] = write_lake(Path(url), table, max(1, rows // blocks))
        out["bytes_before"] = sum(p.stat().st_size for p in Path(url).rglob("*.parquet"))
        out["before"] = _reads(url, t0, repeat)
        started = time.perf_counter()
        result = compact_partition(CompactTask(url, Partition("l2_book", "BENCH", "BTC-USD", "2023-11-14")))
        out["compact_s"] = round(time.perf_counter() - started, 3)
        out["files_after"] = result.files_after
        out["bytes_after"] = result.bytes_after
        out["after"] = _reads(url, t0, repeat)
    return out


def print_compact(r: dict[str, Any]) -> None:
    print(f"svoe lake compact: {r['rows']:,} l2_book rows of one partition, compacted in {r['compact_s']:.2f} s")
    print(f"  files: {r['files_before']:,} -> {r['files_after']:,}; "
          f"bytes: {r['bytes_before'] / 1e6:.1f} MB -> {r['bytes_after'] / 1e6:.1f} MB")  # fmt: skip
    for key, label in (("read_partition_s", "read the partition"), ("read_5min_s", "read a 5-minute window"),
                       ("stats_s", "exactly-once count (stats)")):  # fmt: skip
        b, a = r["before"][key], r["after"][key]
        print(f"  {label:<28} {b * 1000:9.1f} ms -> {a * 1000:9.1f} ms  ({b / a:.1f}x)")
