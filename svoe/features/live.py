"""The live featurizer's state machine: messages of the feed's live stream in, rows out. No
sockets here (svoe/features/live_run.py does the I/O), so tests drive it message by message.

Each subscribed stream (one channel of one symbol) keeps its receipt time made monotonic, its
last entry id (a repeat after an aggregator restart is dropped) and when its last message came.
An event waits in its stream's queue until its tick closes (svoe/features/ticks.py). Tick k closes
once every stream has either sent an event received after k x interval or been silent for
`lateness` seconds, counted from the source's first message for a stream not heard from yet, while
the featurizer had read everything that had come: a symbol that rarely trades holds no tick for
longer than that, and while messages queue up unread silence proves nothing. At the end of the
input every tick through the last event's closes. Closing a tick applies the events that count
for it, in stream order, and computes every started symbol's row.

The rule is per stream rather than one clock for all because the live stream interleaves streams
only roughly: the aggregator reads each stream in batches, so under a backlog one stream's events
arrive seconds after another's newer ones.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from svoe.api.durations import parse_duration
from svoe.api.featureset import FeatureSet
from svoe.features.book import LiveBook, number
from svoe.features.engine import SymbolFeatures
from svoe.features.kinds import Trade
from svoe.features.output import Row
from svoe.features.ticks import first_tick, interval_nanoseconds, tick_time
from svoe.feedpod.events import CHANNEL_FIELDS
from svoe.feedpod.live import topic as live_topic

_BOOK = CHANNEL_FIELDS["l2_book"]
_TRADE = CHANNEL_FIELDS["trades"]
_RECEIPT = 1  # receipt_timestamp's position in every channel's entry
_B_SNAPSHOT, _B_BIDS, _B_ASKS = _BOOK.index("snapshot"), _BOOK.index("bids"), _BOOK.index("asks")
_T_SIDE, _T_AMOUNT, _T_PRICE = _TRADE.index("side"), _TRADE.index("amount"), _TRADE.index("price")


@dataclass
class _Stream:
    symbol: int
    channel: str
    seen: float = -math.inf
    last_id: tuple[int, int] = (-1, -1)
    arrived: float = -math.inf  # the caller's clock (seconds) at its last message


@dataclass
class _Symbol:
    name: str
    engine: SymbolFeatures
    book: LiveBook = field(default_factory=LiveBook)
    # Per channel, (tick, fields) in stream order: a stream's ticks never decrease, but two
    # streams' events arrive interleaved in any order.
    pending: dict[str, deque[tuple[int, list[Any]]]] = field(
        default_factory=lambda: {"l2_book": deque(), "trades": deque()}
    )
    started: bool = False


@dataclass
class Counters:
    events: dict[str, int] = field(default_factory=lambda: {"l2_book": 0, "trades": 0})
    late: int = 0
    duplicates: int = 0
    malformed: int = 0
    rows: int = 0


def _entry_id(raw: bytes) -> tuple[int, int]:
    ms, _, seq = raw.partition(b"-")
    return int(ms), int(seq or 0)


class Featurizer:
    def __init__(self, featureset: FeatureSet) -> None:
        spec = featureset.spec
        self.spec = spec
        self.interval = float(spec.interval_seconds())
        self.step_ns = interval_nanoseconds(spec.interval_seconds())
        self.lateness = float(parse_duration(spec.lateness))
        self.depth = spec.book_depth()
        self.symbols = [_Symbol(s, SymbolFeatures(spec)) for s in spec.symbols]
        self.streams: dict[bytes, _Stream] = {
            live_topic(spec.exchange, ch, s): _Stream(i, ch)
            for ch in spec.channels()
            for i, s in enumerate(spec.symbols)
        }
        self.closed: int | None = None  # the last closed tick
        self.watermark = -math.inf  # the newest monotonic receipt time of any stream
        self.counters = Counters()
        self.heard = False  # any message yet

    def topics(self) -> list[bytes]:
        """The topics to subscribe to. ZMQ matches prefixes, so `on_message` checks the whole topic."""
        return list(self.streams)

    def on_message(self, topic: bytes, payload: bytes, entry_id: bytes, now: float) -> None:
        """One live message, received at `now` (monotonic seconds). Rows come from `advance`."""
        stream = self.streams.get(topic)
        if stream is None:
            return
        try:
            key = _entry_id(entry_id)
            fields = orjson.loads(payload)
            receipt = float(fields[_RECEIPT])
            if len(fields) != len(CHANNEL_FIELDS[stream.channel]) or math.isnan(receipt):
                raise ValueError("unexpected entry shape")
        except (ValueError, TypeError, IndexError, orjson.JSONDecodeError):
            self.counters.malformed += 1
            return
        if key <= stream.last_id:
            self.counters.duplicates += 1
            return
        stream.last_id = key
        if not self.heard:
            # The source has started: every stream may now have events on their way.
            self.heard = True
            for other in self.streams.values():
                other.arrived = now
        stream.arrived = now
        stream.seen = max(stream.seen, receipt)
        tick = first_tick(stream.seen, self.interval)
        if self.closed is not None and tick <= self.closed:
            self.counters.late += 1
            tick = self.closed + 1
        self.symbols[stream.symbol].pending[stream.channel].append((tick, fields))
        self.counters.events[stream.channel] += 1
        self.watermark = max(self.watermark, stream.seen)

    def advance(self, now: float, caught_up: bool) -> list[Row]:
        """Close the ticks every stream has passed, or been silent past, by `now`; their rows.
        `caught_up`: every message that had arrived has been handed to `on_message`."""
        if not self.heard:
            return []
        waiting = [s.seen for s in self.streams.values() if not caught_up or now - s.arrived <= self.lateness]
        if waiting and min(waiting) == -math.inf:
            return []  # a stream not heard from yet may still send the first events
        target = first_tick(min(waiting), self.interval) - 1 if waiting else first_tick(self.watermark, self.interval)
        return self._close_through(target)

    def finish(self) -> list[Row]:
        """The input has ended: close every tick up to the last event's."""
        if self.watermark == -math.inf:
            return []
        return self._close_through(first_tick(self.watermark, self.interval))

    def _close_through(self, target: int) -> list[Row]:
        if self.closed is None:
            fronts = [q[0][0] for s in self.symbols for q in s.pending.values() if q]
            if not fronts or min(fronts) > target:
                return []
            self.closed = min(fronts) - 1
        rows: list[Row] = []
        for k in range(self.closed + 1, target + 1):
            for s in self.symbols:
                books, trades_in = s.pending["l2_book"], s.pending["trades"]
                while books and books[0][0] <= k:
                    f = books.popleft()[1]
                    s.book.apply(bool(f[_B_SNAPSHOT]), f[_B_BIDS] or (), f[_B_ASKS] or ())
                    s.started = True
                trades: list[Trade] = []
                while trades_in and trades_in[0][0] <= k:
                    f = trades_in.popleft()[1]
                    trades.append(Trade(number(f[_T_PRICE]), number(f[_T_AMOUNT]), f[_T_SIDE] == "buy"))
                    s.started = True
                if s.started:
                    bids, asks = s.book.top(self.depth)
                    rows.append((k * self.step_ns, s.name, s.engine.tick(bids, asks, trades)))
        self.closed = max(self.closed, target)
        self.counters.rows += len(rows)
        return rows

    def newest_tick_time(self) -> float | None:
        return None if self.closed is None else tick_time(self.closed, self.interval)
