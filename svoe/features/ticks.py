"""The one rule that makes live and offline features identical.

- Ticks are the multiples of the interval, aligned to the epoch: tick k is at k x interval.
- An event counts for tick k, and every tick after it, when its receipt time made monotonic
  within its stream (the running maximum over the stream's order; the lake's `_seen`) is at most
  k x interval. Its tick is therefore the first k with that property (`first_tick`).
- Within a stream, events apply in the stream's order (the Redis entry id, the lake's
  `svoe_ms, svoe_seq`). Across streams order never matters: each feature reads one channel.
- A symbol's ticks run from the tick of its first event to the tick of the last event of the
  whole FeatureSet (every symbol, every channel read), one row per tick.

Times are the collector's receipt times, carried in the live stream and stored in the lake, so
neither side uses its own clock for counting. Live only decides when a tick is complete: it waits
until every stream has passed the tick or been silent for `lateness` (svoe/features/live.py). An
event that still arrives after its tick closed is counted as late (a metric) and applied at the
next open tick: the one way live can differ from offline, and it is visible.
"""

from __future__ import annotations

import math
from fractions import Fraction


def tick_time(k: int, interval: float) -> float:
    """Tick k's time in epoch seconds, as svoe.lake.books.tick_times computes it."""
    return float(k) * interval


def first_tick(receipt: float, interval: float) -> int:
    """The first tick k with receipt <= k x interval."""
    k = math.ceil(receipt / interval)
    # The division rounds; settle on the exact boundary in the products themselves.
    while tick_time(k - 1, interval) >= receipt:
        k -= 1
    while tick_time(k, interval) < receipt:
        k += 1
    return k


def interval_nanoseconds(interval: Fraction) -> int:
    """The interval in whole nanoseconds (the output's timestamps are k x this, exactly)."""
    ns = interval * 1_000_000_000
    if ns.denominator != 1:
        raise ValueError(f"interval {float(interval)}s is not a whole number of nanoseconds")
    return int(ns)
