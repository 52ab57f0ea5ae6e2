"""One compute function per feature kind. The kinds themselves (channel, parameters, columns)
are declared in svoe.api.featureset.FEATURE_KINDS; this module only says how each is computed.

Every function reads a tick's inputs (`TickInputs`) and returns one value per output column,
None where there is nothing to compute from (no book yet, no trades in the window). Sums use
math.fsum, which is correctly rounded whatever the order of its terms: a window's sum does not
depend on how live or offline happened to accumulate it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Protocol

from svoe.api.featureset import FEATURE_KINDS, Feature

Level = tuple[float, float]  # (price, size)
Value = float | None


@dataclass(frozen=True, slots=True)
class Trade:
    price: float
    amount: float
    buy: bool


class TickInputs(Protocol):
    """What a tick's features read: the book at the tick and the recent ticks' trades and mids."""

    bids: Sequence[Level]  # best first
    asks: Sequence[Level]

    def trades(self, ticks: int) -> list[Trade]:
        """The trades of the last `ticks` ticks (this one included), in stream order."""
        ...

    def mids(self, ticks: int) -> list[Value]:
        """The mid price at the last `ticks` ticks, oldest first (None where there was no book)."""
        ...


Compute = Callable[[Feature, int, TickInputs], tuple[Value, ...]]


def mid_of(bids: Sequence[Level], asks: Sequence[Level]) -> Value:
    if not bids or not asks:
        return None
    return (bids[0][0] + asks[0][0]) / 2


def _mid(f: Feature, window: int, t: TickInputs) -> tuple[Value, ...]:
    return (mid_of(t.bids, t.asks),)


def _spread(f: Feature, window: int, t: TickInputs) -> tuple[Value, ...]:
    if not t.bids or not t.asks:
        return (None,)
    return (t.asks[0][0] - t.bids[0][0],)


def _microprice(f: Feature, window: int, t: TickInputs) -> tuple[Value, ...]:
    if not t.bids or not t.asks:
        return (None,)
    (bid, bid_size), (ask, ask_size) = t.bids[0], t.asks[0]
    total = bid_size + ask_size
    return ((bid * ask_size + ask * bid_size) / total if total > 0 else None,)


def _book_imbalance(f: Feature, window: int, t: TickInputs) -> tuple[Value, ...]:
    depth = f.depth or 1
    bids = math.fsum(size for _, size in t.bids[:depth])
    asks = math.fsum(size for _, size in t.asks[:depth])
    total = bids + asks
    return ((bids - asks) / total if t.bids and t.asks and total > 0 else None,)


def _realized_volatility(f: Feature, window: int, t: TickInputs) -> tuple[Value, ...]:
    mids = t.mids(window + 1)
    returns = [math.log(b / a) for a, b in pairwise(mids) if a is not None and b is not None and a > 0 and b > 0]
    return (math.sqrt(math.fsum(r * r for r in returns)) if returns else None,)


def _vwap(f: Feature, window: int, t: TickInputs) -> tuple[Value, ...]:
    trades = t.trades(window)
    amount = math.fsum(x.amount for x in trades)
    return (math.fsum(x.price * x.amount for x in trades) / amount if amount > 0 else None,)


def _volume(f: Feature, window: int, t: TickInputs) -> tuple[Value, ...]:
    return (math.fsum(x.amount for x in t.trades(window)),)


def _trade_imbalance(f: Feature, window: int, t: TickInputs) -> tuple[Value, ...]:
    trades = t.trades(window)
    buys = math.fsum(x.amount for x in trades if x.buy)
    sells = math.fsum(x.amount for x in trades if not x.buy)
    total = buys + sells
    return ((buys - sells) / total if total > 0 else None,)


def _ohlcv(f: Feature, window: int, t: TickInputs) -> tuple[Value, ...]:
    trades = t.trades(window)
    if not trades:
        return (None, None, None, None, 0.0)
    prices = [x.price for x in trades]
    return (prices[0], max(prices), min(prices), prices[-1], math.fsum(x.amount for x in trades))


COMPUTE: dict[str, Compute] = {
    "mid_price": _mid,
    "spread": _spread,
    "microprice": _microprice,
    "book_imbalance": _book_imbalance,
    "realized_volatility": _realized_volatility,
    "vwap": _vwap,
    "volume": _volume,
    "trade_imbalance": _trade_imbalance,
    "ohlcv": _ohlcv,
}
assert set(COMPUTE) == set(FEATURE_KINDS), "every declared kind has exactly one compute function"
