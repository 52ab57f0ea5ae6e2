"""Order books rebuilt from the lake's `l2_book` rows, and fixed-interval snapshots derived from them.

The input is the rows of one symbol in event order (docs/lake-schema.md): `snapshot` rows replace the
whole book, delta rows set levels (size 0 deletes). Functions here are pure: tables in, values out.
A row counts at time t once it and every row before it have receipt_timestamp <= t: the same as
"every row received by t" when receipt times never decrease (as the lake's reader makes them).

    book_at(table, at, depth=None) -> (bids, asks)         the book after every row received <= at
    snapshots(table, depth, interval, start, end) -> Table  Tardis `book_snapshot_{depth}_{interval}` layout

How it is fast: numpy maps every price once to a dense id in price order and works out, per tick,
which rows still matter (a later snapshot row makes earlier ones irrelevant). Ticks with the same
rows share a segment, solved once and repeated by a numpy take. Segments are solved in batches with
no Python work per tick or per level: a batch is a matrix, one row per segment and one column per
level id in a window from the touch, whose cells hold the position of the level's latest entry up to
that segment (entries scattered into their rows, then a running maximum down the columns). The live
cells of a row, in column order, are its best levels, so every tick's top `depth` comes out of one
`flatnonzero`. The window starts at a bound on the batch's best level and adapts its width to the
book; a tick whose levels lie beyond it ends the batch early, and the rest is retried wider. Nothing
is converted per level to Decimal or Arrow scalars, and no dict of float prices is ever sorted.
"""

from __future__ import annotations

import math
from bisect import bisect_right

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
# Cells (segments x level ids) of the matrix a batch of ticks is solved in: enough ticks per batch
# that numpy's per-call cost is spread thin, few enough that the touch moves little within one.
BATCH_CELLS = 1 << 15
# Level ids beyond `depth` in the first window from the touch; windows then adapt to the book.
MIN_WIDTH = 16


class BookError(ValueError):
    """The rows cannot give a book: no snapshot row to start from, or malformed level lists."""


# ---- the rows' timeline ----------------------------------------------------------------------
class _Timeline:
    """Per row: the receipt time used for ordering and the index of the last snapshot row so far."""

    def __init__(self, table: pa.Table) -> None:
        n = table.num_rows
        ts = _doubles(table.column("receipt_timestamp"), writable=True)
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


def _doubles(column: pa.ChunkedArray | pa.Array, writable: bool = False) -> FloatArray:
    values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    return values.copy() if writable else values


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
        keep = np.repeat(row_keep, counts)
        finite = np.isfinite(prices)
        if finite.all():
            # Rows keep all their entries or none: count kept entries per row, not per entry.
            kept_before = np.r_[0, np.cumsum(np.where(row_keep, counts, 0))]
        else:
            keep &= finite
            kept_before = np.r_[0, np.cumsum(keep)][np.r_[0, np.cumsum(counts)]]
        # Entries are in row order, hence in segment order: segment g is entries bounds[g]:bounds[g+1],
        # counted from the kept entries before each segment's first row.
        first_rows = np.searchsorted(row_seg, np.arange(segments + 1, dtype=np.intp))
        self.bounds: IntArray = kept_before[first_rows].astype(np.intp)
        self.levels, self.pid = _factor(prices if keep.all() else prices[keep])
        # Entry -1 (a level with no entry since the reset) reads as size 0, so gathers need no mask.
        self.val: FloatArray = np.empty(self.pid.size + 1)
        np.compress(keep, sizes, out=self.val[:-1])
        self.val[-1] = 0.0
        self.live_at = self.val > 0
        self.positions: IntArray = np.arange(self.pid.size, dtype=np.intp)
        self.segments = segments
        self.entry_seg: IntArray = np.repeat(np.arange(segments, dtype=np.intp), np.diff(self.bounds))
        self.descending = descending
        # Per segment, the furthest id its entries may make live (bids: the highest, asks: the lowest):
        # with the previous best level, it bounds where a batch's best levels can be.
        self.empty_edge = -1 if descending else self.levels.size
        self.seg_edge: IntArray = np.full(segments, self.empty_edge, dtype=np.intp)
        live = np.where(self.live_at[:-1], self.pid, self.empty_edge)
        starts = self.bounds[:-1]
        filled = starts < self.bounds[1:]
        if filled.any():
            reduce = np.maximum if descending else np.minimum
            self.seg_edge[filled] = reduce.reduceat(live, starts[filled])

    def replay(self, resets: npt.NDArray[np.bool_], depth: int) -> tuple[IntArray, FloatArray]:
        """Per segment, after applying it: (ids, sizes) of the best `depth` live levels, best first,
        padded with -1 and NaN. Segment g starts with a reset when resets[g] (it holds a snapshot row).
        """
        ids_out = np.full((self.segments, depth), -1, dtype=np.intp)
        sizes_out = np.full((self.segments, depth), np.nan)
        if not (depth and self.segments and self.levels.size):
            return ids_out, sizes_out
        empty, descending = self.empty_edge, self.descending
        # The book between batches: per level, the position of its latest entry. Positions only grow,
        # so applying entries is a maximum; those before `since` (the last reset's first entry) are void.
        stamp = np.full(self.levels.size, -1, dtype=np.intp)
        since, best, width = 0, empty, depth + MIN_WIDTH
        breaks = [*np.flatnonzero(resets).tolist(), self.segments]
        g = 0
        while g < self.segments:
            if resets[g]:
                since, best = int(self.bounds[g]), empty
            # A batch never crosses a reset, so one `since` holds for all of it.
            stop = min(g + max(1, BATCH_CELLS // width), breaks[bisect_right(breaks, g)])
            edges = self.seg_edge[g:stop]
            # No id beyond `top` is live in the batch: it bounds the previous best and every id the
            # batch's entries make live. Without one, every book in the batch is empty.
            top = max(best, int(edges.max())) if descending else min(best, int(edges.min()))
            if top != empty:
                done, width = self._solve(g, stop, top, width, since, stamp, ids_out, sizes_out)
                if not done:
                    continue
                stop = g + done
                best = int(ids_out[stop - 1, 0]) if ids_out[stop - 1, 0] >= 0 else empty
            lo, hi = int(self.bounds[g]), int(self.bounds[stop])
            np.maximum.at(stamp, self.pid[lo:hi], self.positions[lo:hi])
            g = stop
        return ids_out, sizes_out

    def _solve(self, g: int, stop: int, top: int, width: int, since: int, stamp: IntArray,
               ids_out: IntArray, sizes_out: FloatArray) -> tuple[int, int]:  # fmt: skip
        """Best levels of segments g.. (up to stop) from a matrix of one row per segment and one column
        per level id from `top` away from the touch, `width` of them. (segments done, next width):
        a segment whose best levels may lie beyond the window ends the batch early, with a wider one.
        """
        depth = ids_out.shape[1]
        sign = -1 if self.descending else 1
        reach = top + 1 if self.descending else self.levels.size - top
        w = min(width, reach)
        lo, hi, rows = int(self.bounds[g]), int(self.bounds[stop]), stop - g
        col = top - self.pid[lo:hi] if self.descending else self.pid[lo:hi] - top
        # Columns before the window wrap to huge unsigned values: one comparison finds those inside.
        inside = np.flatnonzero(col.view(np.uintp) < w)
        # Cell (r, c): position of the latest entry of level c up to segment g + r, or -1. Scatter each
        # segment's entries (the latest wins), then carry them down the rows with a running maximum.
        state = np.full((rows, w), -1, dtype=np.intp)
        window = stamp[top - w + 1 : top + 1][::-1] if self.descending else stamp[top : top + w]
        state[0] = np.where(window >= since, window, -1)
        cells = (self.entry_seg[lo:hi][inside] - g) * w + col[inside]
        np.maximum.at(state.reshape(-1), cells, inside + lo)
        np.maximum.accumulate(state, axis=0, out=state)
        found = np.flatnonzero(self.live_at[state])
        # Live cells come in row order, best first within a row: row r's are found[edge[r]:edge[r + 1]].
        edge = np.searchsorted(found, np.arange(0, (rows + 1) * w, w, dtype=np.intp))
        first, counts = edge[:-1], np.diff(edge)
        short = counts < depth
        cut = w < reach and bool(short.any())
        if cut:
            rows = int(np.argmax(short))
            if not rows:
                return 0, 2 * w
            first, counts, short = first[:rows], counts[:rows], short[:rows]
        if not found.size:
            return rows, width
        take = first[:, None] + np.arange(depth, dtype=np.intp)
        cells = found[np.minimum(take, found.size - 1)]
        cols = cells - (np.arange(rows, dtype=np.intp) * w)[:, None]
        ids, sizes = top + sign * cols, self.val[state.reshape(-1)[cells]]
        if short.any():
            # Rows that reach the book's end with fewer levels: pad them.
            present = np.arange(depth) < counts[:, None]
            ids, sizes = np.where(present, ids, -1), np.where(present, sizes, np.nan)
        ids_out[g : g + rows], sizes_out[g : g + rows] = ids, sizes
        # Next: twice as wide when a segment needed more than the window; as wide when books thinner
        # than `depth` needed all of it; else wide enough for these best levels and a moving touch.
        if cut or short.any():
            return rows, 2 * w if cut else w
        return rows, max(depth + MIN_WIDTH, 2 * int(cols.max()) + 2)

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
        ids, sizes = book.replay(np.ones(1, dtype=bool), book.levels.size if depth is None else depth)
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
    for side in SIDES:
        book = _Side(table, side, row_seg, row_keep, segments, descending=side == "bid")
        ids, sizes = book.replay(reset, depth)
        prices = book.prices_of(ids)[tick_seg]
        sizes = sizes[tick_seg]
        columns += [pa.array(np.ascontiguousarray(prices[:, j])) for j in range(depth)]
        columns += [pa.array(np.ascontiguousarray(sizes[:, j])) for j in range(depth)]
    return pa.table(columns, schema=schema)
