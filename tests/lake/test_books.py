"""svoe.lake.books against a naive dict rebuild, on randomised l2_book tables."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pytest

from svoe.api.durations import parse_interval
from svoe.lake import books
from svoe.lake.books import BookError, book_at, snapshots
from svoe.lake.schema import CHANNEL_SCHEMAS

SEEDS = range(8)
_LEVELS = pa.list_(pa.float64())
# The columns used here, as the lake types them.
SCHEMA = pa.schema(
    [
        CHANNEL_SCHEMAS["l2_book"].field(n)
        for n in ("receipt_timestamp", "snapshot", "bid_price", "bid_size", "ask_price", "ask_size")
    ]
)


@dataclass
class Row:
    ts: float
    snapshot: bool
    bids: list[tuple[float, float]] = field(default_factory=list)
    asks: list[tuple[float, float]] = field(default_factory=list)


def synth(seed: int) -> list[Row]:
    """Small price grids so that levels collide, are deleted while absent and are set twice in a row."""
    rng = random.Random(seed)
    # Off-grid prices (random doubles) exercise the kernel's fallback from grid lookup to bisection.
    if seed % 3 == 2:
        grid = [rng.uniform(90, 110) for _ in range(60)]
    elif seed % 3 == 1:  # a tick grid with the usual float noise (100 + 0.1 * i is rarely exact)
        grid = [100 + 0.1 * i for i in range(-30, 31)]
    else:
        grid = [100 + 0.5 * i for i in range(-30, 31)]

    def levels(count: int, zero_share: float) -> list[tuple[float, float]]:
        return [
            (rng.choice(grid), 0.0 if rng.random() < zero_share else rng.choice([0.5, 1.0, 2.5])) for _ in range(count)
        ]

    rows: list[Row] = []
    ts = 1_000.0 + rng.random()
    lead = rng.randint(0, 5)  # deltas before the first snapshot: no book yet, must be ignored
    for i in range(rng.randint(150, 300)):
        # Receipt times on a 0.25 s grid with repeats, so rows land exactly on ticks and share times.
        ts += rng.choice([0.0, 0.25, 0.25, 0.5, 1.0, 3.0])
        snapshot = i == lead or (i > lead and rng.random() < 0.04)
        if snapshot:
            # Sometimes one side is empty or tiny: the snapshot must still wipe the old side.
            rows.append(Row(ts, True, levels(rng.choice([0, 2, 20]), 0.1), levels(rng.choice([0, 3, 25]), 0.1)))
        else:
            rows.append(Row(ts, False, levels(rng.randint(0, 6), 0.35), levels(rng.randint(0, 6), 0.35)))
    return rows


def to_table(rows: list[Row], chunks: int = 1) -> pa.Table:
    def col(side: str, k: int) -> list[list[float]]:
        return [[lv[k] for lv in getattr(r, side)] for r in rows]

    data = {
        "receipt_timestamp": [r.ts for r in rows],
        "snapshot": [r.snapshot for r in rows],
        "bid_price": col("bids", 0),
        "bid_size": col("bids", 1),
        "ask_price": col("asks", 0),
        "ask_size": col("asks", 1),
    }
    table = pa.table(data, schema=SCHEMA)
    if chunks > 1:  # several record batches, as a multi-file read gives
        step = math.ceil(len(rows) / chunks)
        table = pa.concat_tables([table.slice(i, step) for i in range(0, len(rows), step)])
    return table


Book = tuple[dict[float, float], dict[float, float]]


def naive_apply(book: Book | None, row: Row) -> Book | None:
    if row.snapshot:
        book = ({}, {})
    if book is not None:
        for side, levels in zip(book, (row.bids, row.asks), strict=True):
            for price, size in levels:
                if size == 0:
                    side.pop(price, None)
                else:
                    side[price] = size
    return book


def naive_levels(book: Book, depth: int | None) -> tuple[list[list[float]], list[list[float]]]:
    bids = sorted(((p, s) for p, s in book[0].items() if s > 0), reverse=True)[:depth]
    asks = sorted((p, s) for p, s in book[1].items() if s > 0)[:depth]
    return [list(lv) for lv in bids], [list(lv) for lv in asks]


def naive_book(rows: list[Row], at: float, depth: int | None) -> tuple[list[list[float]], list[list[float]]] | None:
    book: Book | None = None
    for row in rows:
        if row.ts > at:
            break
        book = naive_apply(book, row)
    return None if book is None else naive_levels(book, depth)


def naive_snapshots(rows: list[Row], depth: int, interval: float, start: float, end: float) -> np.ndarray:
    out = []
    book: Book | None = None
    i = 0
    t = math.ceil(start / interval) * interval
    while t <= end:
        while i < len(rows) and rows[i].ts <= t:
            book = naive_apply(book, rows[i])
            i += 1
        if book is not None:
            row = [t]
            for side in naive_levels(book, depth):
                row += [lv[0] for lv in side] + [math.nan] * (depth - len(side))
                row += [lv[1] for lv in side] + [math.nan] * (depth - len(side))
            out.append(row)
        t += interval
    return np.array(out, dtype=np.float64).reshape(-1, 1 + 4 * depth)


@pytest.fixture(params=["default", "one_tick", "narrow"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch sizes and window widths must not change the books: one tick per batch, and windows so
    narrow that batches are cut short and widened again and again."""
    if request.param == "one_tick":
        monkeypatch.setattr(books, "BATCH_CELLS", 1)
    elif request.param == "narrow":
        monkeypatch.setattr(books, "BATCH_CELLS", 40)
        monkeypatch.setattr(books, "MIN_WIDTH", 0)


def as_matrix(table: pa.Table) -> np.ndarray:
    return np.column_stack([c.to_numpy() for c in table.columns]).reshape(-1, table.num_columns)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.usefixtures("kernel")
def test_book_at_matches_naive(seed: int) -> None:
    rows = synth(seed)
    table = to_table(rows, chunks=1 + seed % 3)
    rng = random.Random(seed)
    first_snapshot = next(r.ts for r in rows if r.snapshot)
    times = [r.ts for r in rows if r.ts >= first_snapshot]
    probes = rng.sample(times, 8) + [t + 0.1 for t in rng.sample(times, 5)] + [rows[-1].ts + 100]
    for at in probes:
        for depth in (None, 1, 4):
            expected = naive_book(rows, at, depth)
            assert expected is not None
            assert book_at(table, at, depth) == (expected[0], expected[1]), (at, depth)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.usefixtures("kernel")
def test_snapshots_match_naive(seed: int) -> None:
    rows = synth(seed)
    table = to_table(rows, chunks=1 + seed % 2)
    first_snapshot = next(r.ts for r in rows if r.snapshot)
    for depth, interval in ((1, 0.5), (5, 1.0), (40, 2.0)):
        got = snapshots(table, depth, interval, None, None)
        assert got.column_names[:3] == ["timestamp", "bid_price_0", "bid_price_1" if depth > 1 else "bid_size_0"]
        expected = naive_snapshots(rows, depth, interval, first_snapshot, rows[-1].ts)
        np.testing.assert_array_equal(as_matrix(got), expected)
    # An explicit window starting before the first row: the early ticks have no book and are dropped.
    start, end = rows[0].ts - 10, rows[-1].ts + 5
    got = snapshots(table, 3, 0.25, start, end)
    np.testing.assert_array_equal(as_matrix(got), naive_snapshots(rows, 3, 0.25, start, end))
    assert got.column("timestamp")[0].as_py() >= first_snapshot


@pytest.mark.usefixtures("kernel")
def test_snapshot_columns_and_nan_padding() -> None:
    rows = [
        Row(10.0, True, [(99.0, 1.0), (98.0, 2.0)], [(101.0, 3.0)]),
        Row(10.5, False, [(99.0, 0.0), (97.0, 0.0)], []),  # 97 was never there
        Row(11.2, True, [], [(102.0, 1.0), (103.0, 1.0)]),  # resets: the bids vanish
    ]
    got = snapshots(to_table(rows), 2, 1.0, None, 12.0)
    assert got.column_names == [
        "timestamp",
        "bid_price_0",
        "bid_price_1",
        "bid_size_0",
        "bid_size_1",
        "ask_price_0",
        "ask_price_1",
        "ask_size_0",
        "ask_size_1",
    ]
    nan = math.nan
    np.testing.assert_array_equal(
        as_matrix(got),
        [
            [10.0, 99.0, 98.0, 1.0, 2.0, 101.0, nan, 3.0, nan],
            [11.0, 98.0, nan, 2.0, nan, 101.0, nan, 3.0, nan],
            [12.0, nan, nan, nan, nan, 102.0, 103.0, 1.0, 1.0],
        ],
    )
    assert got.schema.field("bid_price_0").type == pa.float64()


@pytest.mark.usefixtures("kernel")
def test_far_apart_levels() -> None:
    """The best levels are found by scanning from the edge; here they are hundreds of ids apart."""
    prices = [float(p) for p in range(1, 501)]
    rows = [
        Row(1.0, True, [(p, 1.0) for p in prices], [(p + 1000, 1.0) for p in prices]),
        Row(2.0, False, [(p, 0.0) for p in prices[1:-1]], [(p + 1000, 0.0) for p in prices[1:-1]]),
        Row(3.0, False, [(500.0, 0.0)], [(1001.0, 0.0)]),
    ]
    table = to_table(rows)
    for at in (1.0, 2.0, 3.0):
        for depth in (None, 1, 3):
            assert book_at(table, at, depth) == naive_book(rows, at, depth), (at, depth)
    np.testing.assert_array_equal(as_matrix(snapshots(table, 2, 1.0)), naive_snapshots(rows, 2, 1.0, 1.0, 3.0))


def test_no_snapshot_before_at() -> None:
    rows = [Row(5.0, False, [(1.0, 1.0)]), Row(6.0, True, [(1.0, 2.0)]), Row(7.0, False, [(2.0, 1.0)])]
    table = to_table(rows)
    with pytest.raises(BookError, match=r"first one is received at 6\.0"):
        book_at(table, 5.5)
    with pytest.raises(BookError):
        book_at(table, 1.0)
    assert book_at(table, 6.0) == ([[1.0, 2.0]], [])
    with pytest.raises(BookError, match="rows have none"):
        book_at(to_table([Row(5.0, False, [(1.0, 1.0)])]), 9.0)
    assert snapshots(to_table([Row(5.0, False, [(1.0, 1.0)])]), 2, 1.0, None, None).num_rows == 0
    assert snapshots(table, 2, 1.0, 0.0, 5.9).num_rows == 0


def test_rows_wait_for_earlier_rows() -> None:
    """A row received before an earlier row (a clock step back) is applied after it, in table order."""
    rows = [Row(1.0, True, [(1.0, 1.0)]), Row(3.0, False, [(2.0, 1.0)]), Row(2.0, False, [(3.0, 1.0)])]
    table = to_table(rows)
    assert book_at(table, 2.5) == ([[1.0, 1.0]], [])
    assert book_at(table, 3.0) == ([[3.0, 1.0], [2.0, 1.0], [1.0, 1.0]], [])


def test_mismatched_level_lists() -> None:
    table = to_table([Row(1.0, True, [(1.0, 1.0)])])
    table = table.set_column(table.schema.get_field_index("bid_size"), "bid_size", pa.array([[1.0, 2.0]]))
    with pytest.raises(BookError, match="different lengths"):
        book_at(table, 2.0)


def test_parse_interval() -> None:
    assert parse_interval("100ms") == 0.1
    assert parse_interval("1s") == 1.0
    assert parse_interval("5m") == 300.0
    assert parse_interval("250us") == 0.00025
    assert parse_interval("2h") == 7200.0
    assert parse_interval("1.5s") == 1.5
    for bad in ("", "10", "1x", "-1s", "0ms", "1.5.2s", "ms", "1 sec"):
        with pytest.raises(ValueError, match="us, ms, s, m, h"):
            parse_interval(bad)


def test_bad_arguments() -> None:
    table = to_table([Row(1.0, True, [(1.0, 1.0)])])
    with pytest.raises(ValueError, match="depth"):
        snapshots(table, 0, 1.0, None, None)
    with pytest.raises(ValueError, match="interval"):
        snapshots(table, 1, 0.0, None, None)


@pytest.mark.usefixtures("kernel")
def test_levels_set_and_deleted_between_ticks() -> None:
    """A tick whose rows set and delete the same levels: they bound the window but none is live."""
    rows = [
        Row(1.0, True, [], [(105.0, 1.0)]),
        Row(1.5, False, [(99.0, 1.0)], [(101.0, 1.0)]),
        Row(1.6, False, [(99.0, 0.0)], [(101.0, 0.0), (105.0, 0.0)]),
        Row(2.5, False, [(98.0, 1.0), (98.0, 0.0), (97.0, 2.0)], [(102.0, 1.0), (102.0, 0.0)]),
        Row(3.5, False, [(97.0, 0.0)], [(103.0, 1.0)]),
    ]
    table = to_table(rows)
    for depth in (1, 3):
        np.testing.assert_array_equal(
            as_matrix(snapshots(table, depth, 1.0)), naive_snapshots(rows, depth, 1.0, 1.0, 3.5)
        )
    for at in (1.0, 1.6, 2.5, 3.5):
        assert book_at(table, at, 2) == naive_book(rows, at, 2), at


@pytest.mark.usefixtures("kernel")
def test_non_finite_prices_are_ignored() -> None:
    nan, inf = math.nan, math.inf
    rows = [
        Row(1.0, True, [(99.0, 1.0), (nan, 5.0), (98.0, 2.0)], [(101.0, 1.0), (inf, 1.0)]),
        Row(1.5, False, [(-inf, 1.0), (97.0, 3.0)], [(nan, 0.0), (102.0, 2.0)]),
        Row(2.5, False, [(99.0, 0.0), (nan, 1.0)], [(101.0, 0.0)]),
    ]
    finite = [
        Row(
            r.ts,
            r.snapshot,
            [lv for lv in r.bids if math.isfinite(lv[0])],
            [lv for lv in r.asks if math.isfinite(lv[0])],
        )
        for r in rows
    ]
    table = to_table(rows)
    np.testing.assert_array_equal(as_matrix(snapshots(table, 2, 0.5)), naive_snapshots(finite, 2, 0.5, 1.0, 2.5))
    for at in (1.0, 1.5, 2.5):
        assert book_at(table, at) == naive_book(finite, at, None), at
