"""`svoe bench lake --seek`: what `svoe lake book --at T` costs against T's distance from the nearest
checkpoint (a snapshot row at or before T).

The synthetic l2_book rows of svoe/bench/lake.py (a snapshot row every SNAPSHOT_EVERY rows, as
`spec.book.snapshotInterval` writes them) are written as a real lake: blocks of `block_rows` rows
through the feed pod's LocalLakeWriter, under one writer. A second lake holds the same rows with
only the first snapshot, as a feed without `snapshotInterval` stores them. `Lake.book` is then
timed at chosen distances (in rows after a checkpoint), median of `repeat`, each in this process.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from svoe.bench.lake import SNAPSHOT_EVERY, synth_l2_book
from svoe.feedpod.lake_writer import LocalLakeWriter
from svoe.lake.layout import BlockKey
from svoe.lake.schema import CHANNEL_SCHEMAS

WRITER = "bench"


def _as_lake_rows(rows: pa.Table) -> pa.Table:
    """The synthetic rows in the lake's full l2_book schema, with stream ids from receipt times."""
    ms = pc.cast(pc.floor(pc.multiply(rows["receipt_timestamp"], 1000)), pa.int64())
    seq = pa.array(np.arange(rows.num_rows, dtype=np.int32))  # unique within any millisecond
    ids = pc.binary_join_element_wise(pc.cast(ms, pa.string()), pc.cast(seq, pa.string()), "-")
    cols = {
        "svoe_id": ids,
        "svoe_ms": ms,
        "svoe_seq": seq,
        "svoe_writer": pa.repeat(pa.scalar(WRITER), rows.num_rows),
        "svoe_origin": pa.nulls(rows.num_rows, pa.string()),
    }
    schema = CHANNEL_SCHEMAS["l2_book"]
    return pa.table([cols[n] if n in cols else rows[n] for n in schema.names], schema=schema)


def write_lake(root: Path, rows: pa.Table, block_rows: int) -> int:
    writer = LocalLakeWriter(root)
    blocks = 0
    for start in range(0, rows.num_rows, block_rows):
        part = rows.slice(start, block_rows)
        key = BlockKey("l2_book", "BENCH", "BTC-USD", "2023-11-14", part["svoe_id"][0].as_py(), WRITER)
        writer.write_block(key, part)
        blocks += 1
    return blocks


def _without_checkpoints(rows: pa.Table) -> pa.Table:
    """Snapshot rows after the first become the deltas that lead to them: a book without
    `snapshotInterval` holds the same state at every row, reached through deltas alone."""
    snap = rows["snapshot"].to_numpy(zero_copy_only=False)
    keep = np.ones(rows.num_rows, dtype=bool)
    keep[np.flatnonzero(snap)[1:]] = False  # dropped: each would reset the book (all levels)
    return rows.filter(pa.array(keep))


def _time_book(lake: Any, at: float, repeat: int) -> float:
    seconds = []
    for _ in range(repeat):
        t = time.perf_counter()
        lake.book("BENCH", "BTC-USD", at, 10)
        seconds.append(time.perf_counter() - t)
    return statistics.median(seconds)


def bench_seek(rows: int = 200_000, block_rows: int = 5_000, repeat: int = 3) -> dict[str, Any]:
    from svoe.lake import Lake

    table = _as_lake_rows(synth_l2_book(rows))
    receipt = table["receipt_timestamp"].to_numpy()
    out: dict[str, Any] = {"rows": rows, "block_rows": block_rows, "snapshot_every": SNAPSHOT_EVERY}
    with tempfile.TemporaryDirectory(prefix="svoe-seek-") as tmp:
        with_cp, without = Path(tmp) / "checkpoints", Path(tmp) / "first-snapshot-only"
        out["blocks"] = write_lake(with_cp, table, block_rows)
        write_lake(without, _without_checkpoints(table), block_rows)
        lakes = {"checkpoints": Lake(str(with_cp)), "first_snapshot_only": Lake(str(without))}
        # Distances from the nearest checkpoint, in rows, at the middle of the data.
        base = (rows // 2 // SNAPSHOT_EVERY) * SNAPSHOT_EVERY
        points = [d for d in (0, 100, 1_000, SNAPSHOT_EVERY - 1) if base + d < rows]
        out["with_checkpoints"] = [
            {
                "rows_after_checkpoint": d,
                "seconds": round(_time_book(lakes["checkpoints"], float(receipt[base + d]), repeat), 4),
            }
            for d in points
        ]
        far = [d for d in (1_000, 10_000, 50_000, rows // 2, rows - 1) if d < rows]
        out["first_snapshot_only"] = [
            {
                "rows_after_checkpoint": d,
                "seconds": round(_time_book(lakes["first_snapshot_only"], float(receipt[d]), repeat), 4),
            }
            for d in far
        ]
    return out


def print_seek(result: dict[str, Any]) -> None:
    print(
        f"svoe lake book --at: {result['rows']:,} l2_book rows in {result['blocks']} blocks of {result['block_rows']:,}"
    )
    for name, label in (("with_checkpoints", f"snapshot row every {result['snapshot_every']:,}"),
                        ("first_snapshot_only", "first snapshot only")):  # fmt: skip
        print(f"  {label}:")
        for p in result[name]:
            print(f"    {p['rows_after_checkpoint']:>8,} rows after the checkpoint: {p['seconds'] * 1000:8.1f} ms")
