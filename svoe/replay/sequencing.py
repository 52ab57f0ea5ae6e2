"""Rewriting captured messages so that replays can loop and books stay consistent.

A looped replay sends the same capture again and again. Exchanges whose clients check sequence
numbers would see every new pass as a gap (or as old data), so each pass shifts the numbers past
the previous pass. REST book snapshots served during a replay are fitted to the stream position,
so that a client which (re)synchronises gets a snapshot it can continue from.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from svoe.replay.capture import Capture, WsMessage

LOG = logging.getLogger(__name__)

__all__ = ["BinanceSequencer", "LoopNotSupported", "Sequencer", "sequencer_for"]


class LoopNotSupported(ValueError):
    """Looping was asked for an exchange whose sequence numbers the replay cannot rewrite."""


class Sequencer:
    """No rewriting: every pass sends the recorded bytes. Used when the replay does not loop."""

    supports_loop = False

    def rewrite(self, stream_index: int, message_index: int, loop: int, message: WsMessage) -> str | bytes:
        return message.data

    def on_joined(self, stream_index: int, messages: Sequence[int]) -> None:
        """A client connection joins (or takes over) these messages of a recorded connection."""

    def on_sent(self, stream_index: int, message_index: int, loop: int) -> None:
        """Bookkeeping after a message was handed to the socket."""

    def fit_rest(self, path: str, query: Mapping[str, str], body: str) -> str:
        """Adapt a recorded REST answer to the current stream position."""
        return body


@dataclass(slots=True)
class _Ids:
    depth_prev: int | None = None  # the id that precedes the first update of a pass (pu, or U - 1)
    depth_last: int | None = None
    trade_first: int | None = None
    trade_last: int | None = None

    @property
    def depth_span(self) -> int:
        if self.depth_prev is None or self.depth_last is None:
            return 0
        return self.depth_last - self.depth_prev

    @property
    def trade_span(self) -> int:
        if self.trade_first is None or self.trade_last is None:
            return 0
        return self.trade_last - self.trade_first + 1


class BinanceSequencer(Sequencer):
    """Binance spot and USD-M futures combined streams (``{"stream": ..., "data": {...}}``).

    Pass ``k`` adds ``k * span`` to the depth ids ``U``/``u``/``pu`` of each symbol, where span is
    chosen so that the first update of a pass continues exactly from the last update of the
    previous one (spot: ``U == last u + 1``; futures: ``pu == last u``). Trade ids are shifted the
    same way so that looped trades stay unique.

    A REST depth snapshot is fitted to the client that asks. cryptofeed asks when it handles the
    first depth update of a symbol, and the replay broadcasts (one position per stream), so every
    connection that joined a symbol's depth stream is owed one snapshot that ends just before the
    first update it was sent; those are answered in the order the connections joined. A
    connection that joined at the recording's start gets the recorded snapshot unchanged (the
    reference counts depend on it), whoever else asked for it before. A request nobody is owed
    (a resync after a gap) gets ``lastUpdateId`` equal to the last update sent: the client skips
    what it holds as old and continues with the next update.
    """

    supports_loop = True
    _DEPTH_PATHS = ("/api/v3/depth", "/fapi/v1/depth", "/dapi/v1/depth")

    def __init__(self, capture: Capture) -> None:
        self._ids: dict[str, _Ids] = {}
        # (stream, message) -> (symbol, recorded prev id, recorded u) of depth updates: cheap bookkeeping
        self._depth_u: list[dict[int, tuple[str, int, int]]] = []
        for stream in capture.streams:
            table: dict[int, tuple[str, int, int]] = {}
            for index, message in enumerate(stream.messages):
                data = _binance_payload(message.data)
                if data is None:
                    continue
                self._learn(data, index, table)
            self._depth_u.append(table)
        for symbol, ids in self._ids.items():
            if ids.depth_prev is not None and ids.depth_span <= 0:
                raise LoopNotSupported(f"{capture.exchange}: depth ids of {symbol} do not increase; cannot loop")
        # the first depth update of each symbol in the recording: a join there is a join at the start
        self._first_depth: dict[str, tuple[int, int]] = {}
        for si, table in enumerate(self._depth_u):
            for mi, (symbol, _, _) in sorted(table.items()):
                self._first_depth.setdefault(symbol, (si, mi))
        self._joining: dict[str, int] = {}  # symbol -> joins not yet sent a depth update
        self._owed: dict[str, deque[int | None]] = {}  # symbol -> snapshot ids owed (None: the recorded one)
        self._last_u: dict[str, int] = {}

    def _learn(self, data: dict[str, Any], index: int, table: dict[int, tuple[str, int, int]]) -> None:
        event = data.get("e")
        symbol = data.get("s")
        if not isinstance(symbol, str):
            return
        if event == "depthUpdate":
            prev = int(data["pu"]) if "pu" in data else int(data["U"]) - 1
            last = int(data["u"])
            ids = self._ids.setdefault(symbol, _Ids())
            ids.depth_prev = prev if ids.depth_prev is None else min(ids.depth_prev, prev)
            ids.depth_last = last if ids.depth_last is None else max(ids.depth_last, last)
            table[index] = (symbol, prev, last)
        elif event in ("aggTrade", "trade"):
            first = int(data.get("f", data.get("a", data.get("t", 0))))
            last = int(data.get("l", data.get("a", data.get("t", 0))))
            ids = self._ids.setdefault(symbol, _Ids())
            ids.trade_first = first if ids.trade_first is None else min(ids.trade_first, first)
            ids.trade_last = last if ids.trade_last is None else max(ids.trade_last, last)

    def rewrite(self, stream_index: int, message_index: int, loop: int, message: WsMessage) -> str | bytes:
        if loop == 0:
            return message.data
        wrapper = loads_message(message.data)
        data = wrapper.get("data") if isinstance(wrapper, dict) else None
        if not isinstance(data, dict):
            return message.data
        ids = self._ids.get(str(data.get("s")))
        if ids is None:
            return message.data
        event = data.get("e")
        depth_shift = loop * ids.depth_span
        trade_shift = loop * ids.trade_span
        if event == "depthUpdate":
            for key in ("U", "u", "pu"):
                if key in data:
                    data[key] = int(data[key]) + depth_shift
        elif event == "bookTicker" or (event is None and "A" in data):
            if "u" in data:
                data["u"] = int(data["u"]) + depth_shift
        elif event in ("aggTrade", "trade"):
            for key in ("a", "f", "l", "t"):
                if key in data:
                    data[key] = int(data[key]) + trade_shift
        elif event == "kline" and isinstance(data.get("k"), dict) and trade_shift:
            kline = data["k"]
            for key in ("f", "L"):
                if isinstance(kline.get(key), int) and kline[key] >= 0:
                    kline[key] += trade_shift
        else:
            return message.data
        return _dumps(wrapper)

    def on_joined(self, stream_index: int, messages: Sequence[int]) -> None:
        if stream_index >= len(self._depth_u):
            return
        table = self._depth_u[stream_index]
        for symbol in {table[mi][0] for mi in messages if mi in table}:
            self._joining[symbol] = self._joining.get(symbol, 0) + 1

    def on_sent(self, stream_index: int, message_index: int, loop: int) -> None:
        entry = self._depth_u[stream_index].get(message_index)
        if entry is None:
            return
        symbol, recorded_prev, recorded_u = entry
        shift = loop * self._ids[symbol].depth_span
        self._last_u[symbol] = recorded_u + shift
        joins = self._joining.pop(symbol, 0)
        if joins:
            # the joined clients ask for a snapshot when they see this update: one that ends just
            # before it lets them apply it and continue
            at_start = loop == 0 and self._first_depth.get(symbol) == (stream_index, message_index)
            self._owed.setdefault(symbol, deque()).extend([None if at_start else recorded_prev + shift] * joins)

    def fit_rest(self, path: str, query: Mapping[str, str], body: str) -> str:
        if path not in self._DEPTH_PATHS:
            return body
        symbol = query.get("symbol", "").upper()
        owed = self._owed.get(symbol)
        if owed:
            update_id = owed.popleft()
            if update_id is None:
                return body
        else:
            update_id = self._last_u.get(symbol)
        if update_id is None:
            return body
        try:
            snapshot = json.loads(body)
        except json.JSONDecodeError:
            return body
        if not isinstance(snapshot, dict) or "lastUpdateId" not in snapshot:
            return body
        snapshot["lastUpdateId"] = update_id
        LOG.debug("replay: %s depth snapshot fitted to lastUpdateId=%d", symbol, update_id)
        return json.dumps(snapshot, separators=(",", ":"))


def _binance_payload(raw: str | bytes) -> dict[str, Any] | None:
    try:
        wrapper = loads_message(raw)
    except ValueError:
        return None
    data = wrapper.get("data") if isinstance(wrapper, dict) else None
    return data if isinstance(data, dict) else None


try:
    import orjson

    def loads_message(raw: str | bytes) -> Any:
        return orjson.loads(raw)

    def _dumps(value: Any) -> str:
        return orjson.dumps(value).decode()

except ImportError:  # pragma: no cover - orjson ships with the dev environment

    def loads_message(raw: str | bytes) -> Any:
        return json.loads(raw)

    def _dumps(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"))


_SEQUENCERS: dict[str, type[BinanceSequencer]] = {
    "BINANCE": BinanceSequencer,
    "BINANCE_FUTURES": BinanceSequencer,
}


def loopable_exchanges() -> Iterable[str]:
    return sorted(_SEQUENCERS)


def sequencer_for(capture: Capture, loop: bool) -> Sequencer:
    """The sequencer of an exchange; refuses ``loop=True`` where passes cannot be made consistent."""
    cls = _SEQUENCERS.get(capture.exchange)
    if cls is None:
        if loop:
            raise LoopNotSupported(
                f"looping is not supported for {capture.exchange}: the replay does not know how to make its "
                "sequence numbers and book snapshots continue from one pass to the next. "
                f"Loopable: {', '.join(loopable_exchanges())}; replay {capture.exchange} without --loop."
            )
        return Sequencer()
    return cls(capture)
