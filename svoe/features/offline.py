"""Features from the lake: the same rows `svoe features live` computed while the data came in.

Per symbol, the book at every tick comes from svoe.lake's books (`snapshots`, which counts a row
at a tick by the rule of svoe/features/ticks.py), the trades from the exactly-once view with their
monotonic receipt time `_seen`; svoe/features/engine.py then computes each tick as live does.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from svoe.api.featureset import FeatureSetSpec
from svoe.features.book import number
from svoe.features.engine import SymbolFeatures
from svoe.features.kinds import Level, Trade
from svoe.features.output import Row, to_table
from svoe.features.ticks import first_tick, interval_nanoseconds, tick_time
from svoe.lake import Lake, LakeError
from svoe.lake.books import snapshots


@dataclass
class _SymbolData:
    trades: dict[int, list[Trade]] = field(default_factory=dict)
    book: pa.Table | None = None  # l2_book rows, receipt_timestamp made monotonic
    first: float = math.inf  # first and last monotonic receipt time of any of its events
    last: float = -math.inf


def _read(lake: Lake, spec: FeatureSetSpec, symbol: str, t0: float | None, t1: float | None,
          interval: float) -> _SymbolData:  # fmt: skip
    data = _SymbolData()
    if "trades" in spec.channels():
        try:
            t = lake.read(
                "trades", spec.exchange, [symbol], start=t0, end=None if t1 is None else math.nextafter(t1, math.inf),
                keep_seen=True,
                columns=["_seen", "price", "amount", "side"],
            )  # fmt: skip
        except LakeError:
            t = None
        if t is not None and t.num_rows:
            seen = t["_seen"].to_pylist()
            for r, price, amount, side in zip(
                seen, t["price"].to_pylist(), t["amount"].to_pylist(), t["side"].to_pylist(), strict=True
            ):
                data.trades.setdefault(first_tick(r, interval), []).append(
                    Trade(number(price), number(amount), side == "buy")
                )
            data.first, data.last = min(data.first, seen[0]), max(data.last, seen[-1])
    if "l2_book" in spec.channels():
        try:
            book = lake.book_rows(spec.exchange, symbol, t0, sys.float_info.max if t1 is None else t1)
        except LakeError:
            book = None
        if book is not None and book.num_rows:
            seen = book["receipt_timestamp"].to_numpy()
            data.book = book
            data.first, data.last = min(data.first, float(seen[0])), max(data.last, float(seen[-1]))
    return data


def _levels(table: pa.Table, depth: int) -> list[tuple[list[Level], list[Level]]]:
    """Per snapshot row: (bids, asks) best first, the NaN padding dropped."""
    cols = {name: table[name].to_numpy() for name in table.column_names if name != "timestamp"}
    out = []
    for j in range(table.num_rows):
        sides: list[list[Level]] = []
        for side in ("bid", "ask"):
            levels = []
            for i in range(depth):
                price, size = float(cols[f"{side}_price_{i}"][j]), float(cols[f"{side}_size_{i}"][j])
                if not (np.isnan(price) or np.isnan(size)):
                    levels.append((price, size))
            sides.append(levels)
        out.append((sides[0], sides[1]))
    return out


def compute_offline(lake: Lake, spec: FeatureSetSpec, start: float | None = None, end: float | None = None,
                    progress: Callable[[str], None] | None = None) -> pa.Table:  # fmt: skip
    """The FeatureSet's rows from `lake`, ticks within [start, end] (all by default). With a start,
    data from the longest window before it is read too, so the windows are full at `start`."""
    interval = float(spec.interval_seconds())
    step_ns = interval_nanoseconds(spec.interval_seconds())
    depth = spec.book_depth()
    longest = max(spec.window_ticks(f) for f in spec.features) + 1
    t0 = None if start is None else start - longest * interval
    per_symbol = {}
    for i, symbol in enumerate(spec.symbols):
        if progress:
            progress(f"reading {symbol} ({i + 1}/{len(spec.symbols)})")
        # Read a tick past `end`: the last tick is decided below, in whole microseconds.
        per_symbol[symbol] = _read(lake, spec, symbol, t0, None if end is None else end + interval, interval)
    lasts = [d.last for d in per_symbol.values() if d.last > -math.inf]
    if not lasts:
        return to_table(spec, [])
    last_k = first_tick(max(lasts), interval)
    # The bounds are user times (parsed to float seconds): compare them with the ticks in whole
    # microseconds, so that "--end 12:00:02.1" keeps the tick at 12:00:02.1 whatever the rounding.
    if end is not None:
        last_k = min(last_k, (round(end * 1e6) * 1000) // step_ns)
    first_out = None if start is None else -((-round(start * 1e6) * 1000) // step_ns)
    rows: list[tuple[int, int, Row]] = []
    for s_index, (symbol, data) in enumerate(per_symbol.items()):
        if data.first == math.inf:
            continue
        first_k = first_tick(data.first, interval)
        if first_k > last_k:
            continue
        books: list[tuple[list[Level], list[Level]]] = []
        if data.book is not None and depth:
            snaps = snapshots(data.book, depth, interval, tick_time(first_k, interval), tick_time(last_k, interval))
            books = _levels(snaps, depth)
        no_book_ticks = (last_k - first_k + 1) - len(books)  # the book starts at its first snapshot
        engine = SymbolFeatures(spec)
        for k in range(first_k, last_k + 1):
            j = k - first_k - no_book_ticks
            bids, asks = books[j] if j >= 0 else ([], [])
            values = engine.tick(bids, asks, data.trades.get(k, []))
            if first_out is None or k >= first_out:
                rows.append((k, s_index, (k * step_ns, symbol, values)))
    rows.sort(key=lambda r: (r[0], r[1]))
    return to_table(spec, [r[2] for r in rows])
