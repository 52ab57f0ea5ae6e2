"""A symbol's features, tick by tick. Live and offline both drive this one class: each tick they
hand it the book at the tick (best levels first) and the trades that count from this tick on
(svoe/features/ticks.py), and it returns the row's feature values in the FeatureSet's column order.
It keeps only what the windows need: the last ticks' trades and mid prices.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import chain

from svoe.api.featureset import FEATURE_KINDS, FeatureSetSpec
from svoe.features.kinds import COMPUTE, Level, Trade, Value, mid_of


class SymbolFeatures:
    def __init__(self, spec: FeatureSetSpec) -> None:
        self._features = [(f, COMPUTE[f.kind], spec.window_ticks(f)) for f in spec.features]
        trade_windows = [w for f, _, w in self._features if FEATURE_KINDS[f.kind].channel == "trades"]
        mid_windows = [w + 1 for f, _, w in self._features if f.kind == "realized_volatility"]
        self._trades: deque[list[Trade]] = deque(maxlen=max(trade_windows, default=1))
        self._mids: deque[Value] = deque(maxlen=max(mid_windows, default=1))
        self.bids: Sequence[Level] = ()
        self.asks: Sequence[Level] = ()

    def trades(self, ticks: int) -> list[Trade]:
        n = len(self._trades)
        return list(chain.from_iterable(self._trades[i] for i in range(max(0, n - ticks), n)))

    def mids(self, ticks: int) -> list[Value]:
        n = len(self._mids)
        return [self._mids[i] for i in range(max(0, n - ticks), n)]

    def tick(self, bids: Sequence[Level], asks: Sequence[Level], trades: list[Trade]) -> list[Value]:
        """The next tick's values. Ticks must come one after another, none skipped."""
        self.bids, self.asks = bids, asks
        self._trades.append(trades)
        self._mids.append(mid_of(bids, asks))
        values: list[Value] = []
        for feature, compute, window in self._features:
            values.extend(compute(feature, window, self))
        return values
