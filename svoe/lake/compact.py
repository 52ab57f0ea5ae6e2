"""`svoe lake compact`: rewrite each closed partition (channel, exchange, symbol, date) into a few
large files holding its exactly-once events in view order.

Why it is safe at every instant, kill -9 included (docs/lake-schema.md, "Compaction"):
- The output is written under a writer of its own, `_compacted-{generation}`, beside the blocks it
  replaces, and the inputs are deleted only after every output is durable. The view keeps as many
  copies of an event as the writer that stored the most, so while old and new files coexist the
  view holds each event exactly as often as before: the outputs are just one more writer.
- The generation is a digest of the input files' names and sizes. A rerun after a kill sees the
  partition as the kill left it: if anything had been written or deleted, its inputs differ, so it
  writes a new generation and never overwrites a file the view still counts; it then deletes the
  earlier generation with the other inputs.
- A partition is closed when its date is before `--before` (default: today, UTC) and none of its
  files changed within `--min-age`. A block that still arrives later (a collector flushing an old
  backlog) is simply another writer, merged at the next compaction.
- A local block write killed before its rename leaves a temporary file that no reader counts;
  `svoe lake compact` removes those of dead writes first (lake/temporaries.py).
- Each row keeps the collector whose copy it is in `svoe_origin`, so `svoe lake gaps` still knows
  what each collector saw. Only `_compacted-` writers' names start with `_`: collectors' identities
  never do (layout.sanitize_writer strips it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import math
import os
import signal
import time
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from svoe.api.channels import FEED_EVENTS
from svoe.feedpod.lake_writer import LocalLakeWriter, parquet_bytes
from svoe.lake.layout import BlockKey
from svoe.lake.scan import Block, LakeError, LakeScanner
from svoe.lake.schema import CHANNEL_SCHEMAS
from svoe.lake.view import exactly_once_sql

COMPACTED_PREFIX = "_compacted-"
TARGET_SIZE = 128 * 1024 * 1024
MIN_AGE = 15 * 60.0  # seconds without a write before a partition counts as closed
ROW_GROUP_ROWS = 128 * 1024  # small enough for row-group statistics to prune a time window


@dataclass(frozen=True, order=True)
class Partition:
    channel: str
    exchange: str
    symbol: str
    date: str

    def __str__(self) -> str:
        return f"{self.channel} {self.exchange} {self.symbol} {self.date}"


@dataclass(frozen=True)
class CompactTask:
    url: str
    partition: Partition
    target_size: int = TARGET_SIZE


@dataclass(frozen=True)
class CompactResult:
    partition: Partition
    files_before: int
    files_after: int
    rows: int  # stored rows read
    events: int  # exactly-once events written
    bytes_before: int
    bytes_after: int
    left_alone: str | None = None  # why the partition was read but not rewritten


@dataclass(frozen=True)
class Skipped:
    partition: Partition
    reason: str


def is_compacted(block: Block) -> bool:
    return (block.key.writer or "").startswith(COMPACTED_PREFIX)


def parse_size(text: str) -> int:
    """`128MB`, `1GB`, `500k` or a number of bytes."""
    units = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3}
    s = text.strip().lower()
    num = s.rstrip("bkmg")
    unit = s[len(num) :]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in units or not (value > 0 and math.isfinite(value)):
        raise LakeError(f"--target-size {text!r} is not a size: use bytes or a unit, e.g. 128MB, 1GB, 500KB")
    return int(value * units[unit])


# ---- planning (pure over a listing) -------------------------------------------------------------
def plan(blocks: list[Block], before: str, min_age: float, now: float) -> tuple[list[Partition], list[Skipped]]:
    """Which partitions to compact, and why the others are left alone."""
    by_partition: defaultdict[Partition, list[Block]] = defaultdict(list)
    for b in blocks:
        by_partition[Partition(b.key.channel, b.key.exchange, b.key.symbol, b.key.date)].append(b)
    todo: list[Partition] = []
    skipped: list[Skipped] = []
    for part, own in sorted(by_partition.items()):
        newest = max(b.mtime for b in own)
        if part.date >= before:
            skipped.append(Skipped(part, f"open: its date is not before {before} (--before)"))
        elif now - newest < min_age:
            skipped.append(Skipped(part, f"being written: a file changed {now - newest:.0f} s ago (--min-age)"))
        elif len({b.key.writer for b in own}) == 1 and is_compacted(own[0]):
            skipped.append(Skipped(part, "already compacted"))
        else:
            todo.append(part)
    return todo, skipped


def default_before() -> str:
    """`--before` when not given: today (UTC), so every earlier day counts as closed."""
    return dt.datetime.now(dt.UTC).date().isoformat()


def plan_lake(
    url: str,
    before: str | None = None,
    min_age: float = MIN_AGE,
    channels: list[str] | None = None,
    exchange: str | None = None,
    symbols: list[str] | None = None,
) -> tuple[list[CompactTask], list[Skipped]]:
    scanner = LakeScanner(url)
    blocks = scanner.blocks(channels, exchange, symbols)
    todo, skipped = plan(blocks, before or default_before(), min_age, time.time())
    return [CompactTask(url, p) for p in todo], skipped


# ---- one partition ------------------------------------------------------------------------------
def generation(blocks: list[Block], sizes: dict[str, int]) -> str:
    digest = hashlib.sha256()
    for b in sorted(blocks, key=lambda b: b.key.relpath):
        digest.update(f"{b.key.relpath}\0{sizes[b.path]}\n".encode())
    return digest.hexdigest()[:12]


def compacted_rows(table: pa.Table, channel: str) -> pa.Table:
    """The exactly-once rows of one partition's stored rows, in view order, with each row's
    collector in `svoe_origin` and `_seen` (receipt time made monotonic) kept for naming."""
    from svoe.lake.reader import duckdb_connection

    con = duckdb_connection()
    con.register("stored", table)
    origin = "coalesce(svoe_origin, svoe_writer, '')"  # '' for rows of older layouts: no collector known
    view = exactly_once_sql(channel, f"(SELECT * REPLACE ({origin} AS svoe_origin) FROM stored)", True, True)
    out: pa.Table = con.sql(view).to_arrow_table()
    return out


def split_parts(
    rows: pa.Table, generation_id: str, part: Partition, rows_per_file: int
) -> list[tuple[BlockKey, pa.Table]]:
    """Cut the ordered rows into files under the compaction's writer. Each row's key is
    (first ms of its file, index in the partition), so key order is view order; a file's first ms
    is its first row's `_seen`, rounded up, so every row of a file is received before the next
    file's name says it starts (what reader.skip_blocks_before relies on)."""
    schema = CHANNEL_SCHEMAS[part.channel]
    writer = f"{COMPACTED_PREFIX}{generation_id}"
    seen = rows["_seen"].to_numpy()
    out: list[tuple[BlockKey, pa.Table]] = []
    for start in range(0, rows.num_rows, rows_per_file):
        chunk = rows.slice(start, rows_per_file)
        ms = math.ceil(float(seen[start]) * 1000)
        seq = pa.array(range(start, start + chunk.num_rows), pa.int32())
        cols = {
            "svoe_id": pc.binary_join_element_wise(pa.scalar(str(ms)), pc.cast(seq, pa.string()), "-"),
            "svoe_ms": pa.repeat(pa.scalar(ms, pa.int64()), chunk.num_rows),
            "svoe_seq": seq,
            "svoe_writer": pa.repeat(pa.scalar(writer, pa.string()), chunk.num_rows),
        }
        table = pa.table([cols.get(f.name, chunk[f.name]) for f in schema], schema=schema)
        out.append((BlockKey(part.channel, part.exchange, part.symbol, part.date, f"{ms}-{start}", writer), table))
    return out


_steps = 0


def _step() -> None:
    """A fault-injection point after each change to the lake: SVOE_COMPACT_KILL_AFTER=N kills this
    process with SIGKILL after its Nth change, as a crash at that instant would (tests use it)."""
    global _steps
    _steps += 1
    limit = os.environ.get("SVOE_COMPACT_KILL_AFTER")
    if limit and _steps >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


def repeatable_identities(stored: pa.Table, channel: str) -> bool:
    """Whether an event's identity could recur on another date: rows without an exchange time
    (`timestamp` null, or cryptofeed's receipt-time stand-in) are identified by their content
    alone, and the same ticker or book can then come back another day.

    Such a partition is left alone. The view counts a collector's copies of one identity over the
    whole lake, so folding one date's copies into a writer of their own could lower the count of
    an identity that the same collector also stored on other dates. Where the exchange's time is
    part of the identity, an identity lives on one date (copies received either side of midnight
    are one event, which the view keeps once either way). Feed events carry their collector and
    receipt time in their identity."""
    if channel == FEED_EVENTS or "timestamp" not in stored.column_names:
        return channel != FEED_EVENTS
    ts, rt = stored["timestamp"], stored["receipt_timestamp"]
    return bool(ts.null_count or pc.any(pc.equal(ts, rt)).as_py())


def compact_partition(task: CompactTask) -> CompactResult:
    return _compact(LakeScanner(task.url), task)


def _compact(scanner: LakeScanner, task: CompactTask) -> CompactResult:
    part = task.partition
    blocks = scanner.blocks([part.channel], part.exchange, [part.symbol], {part.date})
    listed = _stat(scanner, blocks)
    infos = {path: size for path, (size, _) in listed.items()}
    size_before = sum(infos.values())
    if not blocks or (len({b.key.writer for b in blocks}) == 1 and is_compacted(blocks[0])):
        return CompactResult(part, len(blocks), len(blocks), 0, 0, size_before, size_before)
    stored = scanner.dataset(part.channel, blocks).to_table()
    if repeatable_identities(stored, part.channel):
        why = "events without an exchange time: compacting could change the exactly-once count"
        return CompactResult(part, len(blocks), len(blocks), stored.num_rows, 0, size_before, size_before, why)
    rows = compacted_rows(stored, part.channel)
    bytes_per_row = max(1.0, size_before / max(1, stored.num_rows))
    rows_per_file = max(1, int(task.target_size / bytes_per_row))
    outputs = split_parts(rows, generation(blocks, infos), part, rows_per_file)
    written: set[str] = set()
    size_after = 0
    for key, table in outputs:
        size_after += _write(scanner, key, table)
        written.add(f"{scanner.root}/{key.relpath}")
        _step()
    if _stat(scanner, blocks) != listed:
        # A block was rewritten (a collector's retry) or removed (another compaction) while this
        # one read the partition: the outputs may not hold what it has now. Leave every input;
        # the view counts the outputs as one more writer, and the next run folds both in.
        why = "a block changed while it was being compacted: run again"
        return CompactResult(part, len(blocks), len(blocks), stored.num_rows, 0, size_before, size_before, why)
    for b in blocks:
        if b.path not in written:
            _delete(scanner, b)
            _step()
    return CompactResult(part, len(blocks), len(outputs), stored.num_rows, rows.num_rows, size_before, size_after)


def _stat(scanner: LakeScanner, blocks: list[Block]) -> dict[str, tuple[int, float]]:
    infos = scanner.fs.get_file_info([b.path for b in blocks])
    return {i.path: (i.size, i.mtime.timestamp() if i.mtime else 0.0) for i in infos if i.type == pafs.FileType.File}


def _write(scanner: LakeScanner, key: BlockKey, table: pa.Table) -> int:
    if not scanner.location.is_s3:
        return LocalLakeWriter(scanner.root).write_block(key, table, ROW_GROUP_ROWS)
    data = parquet_bytes(table, "zstd", ROW_GROUP_ROWS)
    # One PUT (or a multipart upload completed at close): the object appears whole or not at all.
    with scanner.fs.open_output_stream(f"{scanner.root}/{key.relpath}") as f:
        f.write(data)
    return len(data)


def _delete(scanner: LakeScanner, block: Block) -> None:
    if not scanner.location.is_s3:
        with contextlib.suppress(FileNotFoundError):  # deleted by another compaction meanwhile
            scanner.fs.delete_file(block.path)
        return
    import awswrangler as wr

    # Not pyarrow's delete_file: it leaves an empty `date=.../` marker object behind, which
    # Athena and other Hive readers would list as a file of the partition.
    wr.s3.delete_objects([scanner.location.uri(block.key.relpath)])
