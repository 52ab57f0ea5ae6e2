"""Order books rebuilt from the lake's `l2_book` rows, and fixed-interval snapshots derived from them.

The input is the rows of one symbol in event order (docs/lake-schema.md): `snapshot` rows replace the
whole book, delta rows set levels (size 0 deletes). Functions here are pure: tables in, values out.
A row counts at time t once it and every row before it have receipt_timestamp <= t: the same as
"every row received by t" when receipt times never decrease (as the lake's reader makes them).

    book_at(table, at, depth=None) -> (bids, asks)         the book after every row received <= at
    snapshots(table, depth, interval, start, end) -> Table  Tardis `book_snapshot_{depth}_{interval}` layout
    parse_interval("100ms") -> 0.1

How it is fast: numpy maps every price once to a dense id in price order and works out, per tick,
which rows still matter (a later snapshot row makes earlier ones irrelevant). A book side is then an
array of sizes indexed by id, and its best levels are a short scan from the side's edge instead of a
sort. The rows up to each tick are applied by one numpy assignment when a tick has many entries, or
by a plain Python loop over lists when it has few and numpy's per-call cost would dominate. Nothing
is converted per level to Decimal or Arrow scalars, and no dict of float prices is ever sorted.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from fractions import Fraction
from itertools import islice

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
Levels = list[list[float]]

SIDES = ("bid", "ask")
# Above this many ticks the output would not fit in memory anyway; fail early with a clear message.
MAX_TICKS = 50_000_000
# Above this many level entries per tick (per side), applying a tick with numpy calls is faster than
# a Python loop over its entries: measured crossover ~80 on svoe.bench.lake's synthetic book
# (snapshots of depth 10 every 0.1 s to 60 s), on a 2-core x86 VM.
NUMPY_ENTRIES_PER_SEGMENT = 80
# Entries turned into Python objects at once by the Python loop, to bound its memory.
BATCH_ENTRIES = 1 << 18


class BookError(ValueError):
    """The rows cannot give a book: no snapshot row to start from, or malformed level lists."""


# ---- intervals -------------------------------------------------------------------------------
_UNITS = {
    "us": Fraction(1, 1_000_000),
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
}
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h)\s*$")


def parse_interval(text: str) -> float:
    """Seconds in an interval such as "100ms" (0.1): a positive number followed by us, ms, s, m or h."""
    match = _INTERVAL.match(text)
    value = Fraction(match.group(1)) * _UNITS[match.group(2)] if match else Fraction(0)
    if value <= 0:
        raise ValueError(
            f"invalid interval {text!r}: expected a positive number followed by a unit, "
            "one of us, ms, s, m, h (e.g. 250us, 100ms, 1s, 5m, 1h)"
        )
    # Via Fraction, so "100ms" is the double nearest 0.1 rather than 100 * 0.001.
    return float(value)


# ---- the rows' timeline ----------------------------------------------------------------------
class _Timeline:
    """Per row: the receipt time used for ordering and the index of the last snapshot row so far."""

    def __init__(self, table: pa.Table) -> None:
        n = table.num_rows
        ts = _doubles(table.column("receipt_timestamp"))
        ts[np.isnan(ts)] = -np.inf
        # Rows are applied in event order, so a row counts at a tick only once every row before it
        # does: a running maximum turns a slightly non-monotonic clock into a usable prefix.
        self.ts: FloatArray = np.maximum.accumulate(ts) if n else ts
        snap = table.column("snapshot").fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
        marks = np.where(snap, np.arange(n, dtype=np.intp), -1)
        self.last_snap: IntArray = np.maximum.accumulate(marks) if n else marks.astype(np.intp)
        self.first_snap = int(np.argmax(snap)) if snap.any() else -1

    def prefix(self, at: float) -> tuple[int, int]:
        """(rows received by `at`, index of the last snapshot among them or -1)."""
        r = int(np.searchsorted(self.ts, at, side="right"))
        return r, int(self.last_snap[r - 1]) if r else -1


def _doubles(column: pa.ChunkedArray | pa.Array) -> FloatArray:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64).copy()


def _factor(prices: FloatArray) -> tuple[FloatArray, IntArray]:
    """(sorted distinct prices, id of each price in that list)."""
    ordered = np.sort(prices)
    levels = ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if ordered.size else ordered
    if levels.size > 1:
        # Prices usually sit on a tick grid: index a lookup table by grid slot, which is an order of
        # magnitude faster than a binary search per entry. Slots are a deterministic function of the
        # price, so equal prices always land on the same slot; only injectivity needs checking.
        step = float(np.diff(levels).min())
        span = (levels[-1] - levels[0]) / step
        if span < 16 * levels.size + 4096:
            slot_of_level = np.rint((levels - levels[0]) / step).astype(np.intp)
            if bool((np.diff(slot_of_level) > 0).all()):
                lookup = np.full(int(slot_of_level[-1]) + 1, -1, dtype=np.intp)
                lookup[slot_of_level] = np.arange(levels.size, dtype=np.intp)
                return levels, lookup[np.rint((prices - levels[0]) / step).astype(np.intp)]
    return levels, np.searchsorted(levels, prices).astype(np.intp)


class _Side:
    """One side's level entries, grouped by segment (the rows up to a tick), and its replay."""

    def __init__(self, table: pa.Table, side: str, row_seg: IntArray, row_keep: npt.NDArray[np.bool_],
                 segments: int, descending: bool) -> None:  # fmt: skip
        price_col, size_col = table.column(f"{side}_price"), table.column(f"{side}_size")
        counts = pc.list_value_length(price_col).fill_null(0).to_numpy(zero_copy_only=False)
        size_counts = pc.list_value_length(size_col).fill_null(0).to_numpy(zero_copy_only=False)
        if not np.array_equal(counts, size_counts):
            row = int(np.flatnonzero(counts != size_counts)[0])
            raise BookError(f"row {row}: {side}_price and {side}_size have different lengths")
        prices = _doubles(pc.list_flatten(price_col))
        sizes = _doubles(pc.list_flatten(size_col))
        keep = np.repeat(row_keep, counts) & np.isfinite(prices)
        entry_seg = np.repeat(row_seg, counts)[keep]
        self.levels, self.pid = _factor(prices[keep])
        self.val: FloatArray = sizes[keep]
        self.segments = segments
        # Entries are in row order, hence in segment order: segment g is entries bounds[g]:bounds[g+1].
        self.bounds: IntArray = np.searchsorted(entry_seg, np.arange(segments + 1)).astype(np.intp)
        self.descending = descending
        # `edge` bounds the best live level (bids: no live id above it; asks: none below), so the best
        # levels are a short scan from it. Per segment, the furthest id its entries may make live:
        self.empty_edge = -1 if descending else self.levels.size
        self.seg_edge: IntArray = np.full(segments, self.empty_edge, dtype=np.intp)
        live = np.where(self.val > 0, self.pid, self.empty_edge)
        starts = self.bounds[:-1]
        filled = starts < self.bounds[1:]
        if filled.any():
            reduce = np.maximum if descending else np.minimum
            self.seg_edge[filled] = reduce.reduceat(live, starts[filled])

    def replay(self, resets: list[bool], depth: int) -> tuple[IntArray, FloatArray]:
        """Per segment, after applying it: (ids, sizes) of the best `depth` live levels, best first,
        padded with -1 and NaN. Segment g starts with a reset when resets[g] (it holds a snapshot row).
        """
        ids = np.full((self.segments, depth), -1, dtype=np.intp)
        sizes = np.full((self.segments, depth), np.nan)
        if depth and self.segments:
            busy = self.pid.size >= NUMPY_ENTRIES_PER_SEGMENT * self.segments
            (self._replay_numpy if busy else self._replay_python)(resets, depth, ids, sizes)
        return ids, sizes

    def _replay_python(self, resets: list[bool], depth: int, ids_out: IntArray, sizes_out: FloatArray) -> None:
        # Few entries per tick: numpy's ~1 us per call would dominate, while over dense ids a level
        # update is one list store and the best levels a short scan, ~50 ns a step in Python.
        n_levels, empty, descending = self.levels.size, self.empty_edge, self.descending
        step, stop = (-1, -1) if descending else (1, n_levels)
        bounds, seg_edge = self.bounds.tolist(), self.seg_edge.tolist()
        sizes = [0.0] * n_levels
        edge, written_from, g = empty, 0, 0
        while g < self.segments:
            # Python objects are made for a batch of ticks at a time: a day of entries (and of
            # results) as Python lists would take gigabytes.
            batch_end = max(g + 1, bisect_right(bounds, bounds[g] + BATCH_ENTRIES) - 1)
            lo = bounds[g]
            span = slice(lo, bounds[batch_end])
            entries = zip(self.pid[span].tolist(), self.val[span].tolist(), strict=True)
            found_ids: list[int] = []
            found_sizes: list[float] = []
            counts: list[int] = []
            for seg in range(g, batch_end):
                hi = bounds[seg + 1]
                if resets[seg]:
                    # Zero what was written since the last reset when that is cheaper than a new list.
                    if lo - written_from < n_levels:
                        for p in self.pid[written_from:lo].tolist():
                            sizes[p] = 0.0
                    else:
                        sizes = [0.0] * n_levels
                    edge, written_from = empty, lo
                for p, v in islice(entries, hi - lo):
                    sizes[p] = v
                lo = hi
                e = seg_edge[seg]
                if (e > edge) if descending else (e < edge):
                    edge = e
                i, k = edge, 0
                while i != stop:
                    size = sizes[i]
                    if size > 0.0:
                        found_ids.append(i)
                        found_sizes.append(size)
                        k += 1
                        if k == depth:
                            break
                    i += step
                # The best live level is the new edge, so deletes at the top are not scanned again.
                edge = found_ids[-k] if k else empty
                counts.append(k)
            per_seg = np.array(counts, dtype=np.intp)
            rows = np.repeat(np.arange(g, batch_end), per_seg)
            cols = np.arange(rows.size) - np.repeat(np.cumsum(per_seg) - per_seg, per_seg)
            ids_out[rows, cols] = found_ids
            sizes_out[rows, cols] = found_sizes
            g = batch_end

    def _replay_numpy(self, resets: list[bool], depth: int, ids_out: IntArray, sizes_out: FloatArray) -> None:
        # Many entries per tick: one fancy assignment per tick beats a Python store per level.
        n_levels, empty, descending = self.levels.size, self.empty_edge, self.descending
        bounds, seg_edge = self.bounds.tolist(), self.seg_edge.tolist()
        sizes = np.zeros(n_levels)
        # Position of the latest entry seen per level, to find each tick's last write per level.
        stamp = np.full(n_levels, -1, dtype=np.intp)
        positions = np.arange(self.pid.size, dtype=np.intp)
        edge = empty
        for g, reset in enumerate(resets):
            if reset:
                sizes.fill(0.0)
                edge = empty
            lo, hi = bounds[g], bounds[g + 1]
            if lo < hi:
                pid, val, pos = self.pid[lo:hi], self.val[lo:hi], positions[lo:hi]
                # A fancy assignment with repeated ids has no defined winner; keep the last write.
                # Stamps of earlier ticks are below any position here, so they need no reset.
                np.maximum.at(stamp, pid, pos)
                last = stamp[pid] == pos
                if not last.all():
                    pid, val = pid[last], val[last]
                sizes[pid] = val
                e = seg_edge[g]
                edge = max(edge, e) if descending else min(edge, e)
            if edge == empty:
                continue
            width = 4 * depth + 32
            while True:
                if descending:
                    start, end = max(edge + 1 - width, 0), edge + 1
                else:
                    start, end = edge, min(edge + width, n_levels)
                live = np.flatnonzero(sizes[start:end] > 0)
                if live.size >= depth or (start == 0 if descending else end == n_levels):
                    break
                width *= 4
            ids = ((live[::-1] if descending else live) + start)[:depth]
            edge = int(ids[0]) if ids.size else empty
            ids_out[g, : ids.size] = ids
            sizes_out[g, : ids.size] = sizes[ids]

    def prices_of(self, ids: IntArray) -> FloatArray:
        if not self.levels.size:
            return np.full(ids.shape, np.nan)
        return np.where(ids >= 0, self.levels[np.maximum(ids, 0)], np.nan)


# ---- public API ------------------------------------------------------------------------------
def book_at(table: pa.Table, at: float, depth: int | None = None) -> tuple[Levels, Levels]:
    """(bids, asks) as [[price, size], ...] after every row with receipt_timestamp <= at.

    `table` holds l2_book rows of one symbol in event order. Bids are descending, asks ascending,
    sizes > 0, at most `depth` levels per side (all when None). Raises BookError when no snapshot
    row is at or before `at`.
    """
    if depth is not None and depth < 0:
        raise ValueError(f"depth must be >= 0 or None, got {depth}")
    timeline = _Timeline(table)
    rows, snap = timeline.prefix(at)
    if snap < 0:
        if timeline.first_snap < 0:
            raise BookError(f"no snapshot row at or before {at}: the {table.num_rows} rows have none")
        first = float(timeline.ts[timeline.first_snap])
        raise BookError(f"no snapshot row at or before {at}: the first one is received at {first}")
    # Everything before the last snapshot is irrelevant, so only that row and its deltas are read.
    part = table.slice(snap, rows - snap)
    row_seg = np.zeros(part.num_rows, dtype=np.intp)
    row_keep = np.ones(part.num_rows, dtype=bool)
    result: list[Levels] = []
    for side in SIDES:
        book = _Side(part, side, row_seg, row_keep, 1, descending=side == "bid")
        ids, sizes = book.replay([True], book.levels.size if depth is None else depth)
        live = ids[0] >= 0
        result.append(np.column_stack([book.prices_of(ids[0][live]), sizes[0][live]]).tolist())
    return result[0], result[1]


def snapshot_schema(depth: int) -> pa.Schema:
    """timestamp, then bid_price_0..N-1, bid_size_0..N-1, ask_price_0..N-1, ask_size_0..N-1."""
    names = [f"{side}_{what}_{i}" for side in SIDES for what in ("price", "size") for i in range(depth)]
    return pa.schema([("timestamp", pa.float64()), *((name, pa.float64()) for name in names)])


def tick_times(start: float, end: float, interval: float) -> FloatArray:
    """Multiples of `interval` (aligned to the epoch) in [start, end]."""
    first, last = math.ceil(start / interval), math.floor(end / interval)
    # The divisions round; nudge so that first/last are exactly the extreme multiples inside.
    while (first - 1) * interval >= start:
        first -= 1
    while first * interval < start:
        first += 1
    while (last + 1) * interval <= end:
        last += 1
    while last * interval > end:
        last -= 1
    count = last - first + 1
    if count > MAX_TICKS:
        raise ValueError(f"{count} ticks of {interval}s from {start} to {end}: more than {MAX_TICKS}")
    return np.arange(first, last + 1, dtype=np.float64) * interval if count > 0 else np.empty(0)


def snapshots(table: pa.Table, depth: int, interval: float, start: float | None = None,
              end: float | None = None) -> pa.Table:  # fmt: skip
    """The book every `interval` seconds, `depth` levels per side, in snapshot_schema(depth).

    Ticks are the multiples of `interval` from `start` (default: the first snapshot row's receipt
    time) to `end` (default: the last row's). Each holds the book after every row received at or
    before it; ticks before the first snapshot row have no book and are left out. Missing levels
    are NaN.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if not (interval > 0 and math.isfinite(interval)):
        raise ValueError(f"interval must be a positive number of seconds, got {interval}")
    schema = snapshot_schema(depth)
    timeline = _Timeline(table)
    if timeline.first_snap < 0:
        return schema.empty_table()
    start = float(timeline.ts[timeline.first_snap]) if start is None else start
    end = float(timeline.ts[-1]) if end is None else end
    ticks = tick_times(start, end, interval)

    rows = np.searchsorted(timeline.ts, ticks, side="right").astype(np.intp)
    snap = np.where(rows > 0, timeline.last_snap[np.maximum(rows - 1, 0)], -1)
    valid = snap >= 0
    ticks, rows = ticks[valid], rows[valid]
    if not ticks.size:
        return schema.empty_table()
    # Ticks with the same row prefix share one book: a segment is a distinct prefix.
    new = np.r_[True, rows[1:] != rows[:-1]]
    tick_seg = np.cumsum(new) - 1
    seg_rows = rows[new]
    seg_prev = np.r_[0, seg_rows[:-1]]
    seg_snap = timeline.last_snap[seg_rows - 1]
    reset = seg_snap >= seg_prev
    seg_start = np.where(reset, seg_snap, seg_prev)
    segments = seg_rows.size

    all_rows = np.arange(table.num_rows, dtype=np.intp)
    row_seg = np.searchsorted(seg_rows, all_rows, side="right").astype(np.intp)
    # Rows after the last tick, and rows a later snapshot row of the same segment overrides, are unused.
    row_keep = row_seg < segments
    row_keep[row_keep] = all_rows[row_keep] >= seg_start[row_seg[row_keep]]

    columns = [pa.array(ticks)]
    resets = reset.tolist()
    for side in SIDES:
        book = _Side(table, side, row_seg, row_keep, segments, descending=side == "bid")
        ids, sizes = book.replay(resets, depth)
        prices = book.prices_of(ids)[tick_seg]
        sizes = sizes[tick_seg]
        columns += [pa.array(np.ascontiguousarray(prices[:, j])) for j in range(depth)]
        columns += [pa.array(np.ascontiguousarray(sizes[:, j])) for j in range(depth)]
    return pa.table(columns, schema=schema)
