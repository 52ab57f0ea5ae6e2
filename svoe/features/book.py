"""The live order book of one symbol, applied from the live stream's l2_book events exactly as
svoe.lake.books rebuilds it from the lake: a snapshot event replaces the whole book, a delta sets
levels, and a level lives while its size is above 0; nothing counts before the first snapshot.
Prices and sizes become doubles the way the lake's writer parses them (correctly rounded from the
exchange's decimal text), so both sides hold the same numbers.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from typing import Any

from svoe.features.kinds import Level


def number(v: Any) -> float:
    """A buffer entry's number (decimal text or JSON number) as the lake stores it."""
    return float(v) if v is not None else float("nan")


class LiveBook:
    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.started = False

    def apply(self, snapshot: bool, bids: Iterable[Sequence[Any]], asks: Iterable[Sequence[Any]]) -> None:
        if snapshot:
            self.bids.clear()
            self.asks.clear()
            self.started = True
        elif not self.started:
            return
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for level in levels:
                price, size = number(level[0]), number(level[1])
                if size > 0:
                    side[price] = size
                else:
                    side.pop(price, None)

    def top(self, depth: int) -> tuple[list[Level], list[Level]]:
        """The best `depth` levels of each side, best first (empty before the first snapshot)."""
        if not self.started or depth < 1:
            return [], []
        bids = [(p, self.bids[p]) for p in heapq.nlargest(depth, self.bids)]
        asks = [(p, self.asks[p]) for p in heapq.nsmallest(depth, self.asks)]
        return bids, asks
