"""Which client connection gets which captured message: the replay exchange's decisions, no I/O.

A capture holds one recorded connection for all symbols, but several clients (feed pods: shards,
or redundant replicas of a shard) replay it side by side. Like a real exchange, the replay sends
each connection the streams it subscribed to:

- A recorded connection is split into *lanes*, one per stream name (``sushiusdt@aggTrade``), each
  with its own position.
- A message of a lane goes to EVERY open connection subscribed to it at that moment (broadcast).
- A lane nobody subscribes to is *held*: its position does not advance (and, when paced, its clock
  stops) until somebody subscribes. When its last subscriber closes it is held again, so a late
  joiner gets it from the current position onwards and nothing is dropped while a subscriber may
  still come.
- The replay is exhausted when every lane somebody subscribed to has been sent to its end. Lanes
  nobody subscribed to are held, not owed: a client that collects part of a capture (a DataFeed of
  some of its symbols or channels) is done when its own streams are.

How an exchange names its streams is declared in :data:`NAMINGS`. Only Binance and Binance
Futures combined streams are routed so far: cryptofeed subscribes in the URL
(``/stream?streams=a@x/b@y``) and every message names its stream (``{"stream": "a@x", ...}``).
A Binance connection without a ``streams`` parameter gets every stream (a firehose).

Every other exchange keeps the replay's earlier behaviour, because the replay cannot tell a
connection's subscription from its URL: they subscribe with frames after connecting, and their
messages name streams in exchange-specific ways (Bitfinex by channel ids it assigns on subscribe,
Gemini and Kraken Futures by fields that differ from the subscribe frame's). There, a recorded
connection is one lane served once, to one owner: the first connection whose path matches the
recorded one, or else the first connection; when the owner closes, the next connection resumes
it, so that reconnects count nothing twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from svoe.replay.capture import WsStream

__all__ = ["NAMINGS", "Lane", "Naming", "Router", "split_lanes"]


@dataclass(frozen=True)
class Naming:
    """How an exchange names a stream: in the subscribing URL and in each message."""

    url_param: str  # query parameter that lists the subscribed streams
    separator: str  # between stream names in that parameter
    message_key: str  # top-level key of a message that names its stream

    def subscription(self, query: Mapping[str, str]) -> frozenset[str] | None:
        """The streams a connection subscribed to; None: the parameter is absent (every stream)."""
        if self.url_param not in query:
            return None
        return frozenset(s for s in query[self.url_param].split(self.separator) if s)

    def stream_of(self, data: str | bytes, loads: Callable[[str | bytes], Any]) -> str | None:
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        # the name leads every message of these exchanges: a regex spares parsing the whole body
        m = re.match(r'\s*\{\s*"' + re.escape(self.message_key) + r'"\s*:\s*"([^"]+)"', text)
        if m is not None:
            return m.group(1)
        try:
            value = loads(data)
        except ValueError:
            return None
        name = value.get(self.message_key) if isinstance(value, dict) else None
        return name if isinstance(name, str) else None


_BINANCE_COMBINED = Naming(url_param="streams", separator="/", message_key="stream")

NAMINGS: dict[str, Naming] = {
    "BINANCE": _BINANCE_COMBINED,
    "BINANCE_FUTURES": _BINANCE_COMBINED,
}


@dataclass(frozen=True)
class Lane:
    """The messages of one stream name within one recorded connection.

    name None: a whole recorded connection (exchanges without a :class:`Naming`), or the messages
    of a routed exchange that name no stream (sent to every connection).
    """

    index: int
    stream_index: int
    path: str  # recorded path, without the query
    name: str | None
    messages: tuple[int, ...]  # indices into the recorded connection's messages
    routed: bool  # name known from the exchange's Naming (broadcast), else served once to an owner

    @property
    def label(self) -> str:
        return self.name if self.name is not None else f"ws.{self.stream_index}"


def split_lanes(streams: Sequence[WsStream], naming: Naming | None, loads: Callable[[str | bytes], Any]) -> list[Lane]:
    lanes: list[Lane] = []
    for si, stream in enumerate(streams):
        path = stream.path.split("?", 1)[0]
        if naming is None:
            lanes.append(Lane(len(lanes), si, path, None, tuple(range(len(stream.messages))), routed=False))
            continue
        by_name: dict[str | None, list[int]] = {}
        for mi, message in enumerate(stream.messages):
            by_name.setdefault(naming.stream_of(message.data, loads), []).append(mi)
        for name, indices in by_name.items():
            lanes.append(Lane(len(lanes), si, path, name, tuple(indices), routed=True))
    return lanes


@dataclass
class _Client:
    number: int
    path: str
    subscription: frozenset[str] | None  # None: every stream


@dataclass
class _LaneState:
    position: int = 0
    loop: int = 0
    done: bool = False
    sent: int = 0
    subscribers: tuple[int, ...] = ()
    started: bool = False
    held_since: float | None = None  # wall time the lane lost its last subscriber
    offset: float = 0.0  # wall seconds the lane has been held since the replay started


@dataclass
class Router:
    """Positions and subscribers of every lane. Times are the caller's clock (seconds)."""

    lanes: Sequence[Lane]
    loop: bool = False
    clients: dict[int, _Client] = field(default_factory=dict)
    state: list[_LaneState] = field(default_factory=list)
    wall0: float | None = None  # when the first lane started: the paced schedule's origin

    def __post_init__(self) -> None:
        self.state = [_LaneState(done=not lane.messages) for lane in self.lanes]

    # -- subscriptions

    def connect(self, number: int, path: str, subscription: frozenset[str] | None, now: float) -> list[Lane]:
        """A connection is ready; returns the lanes it joined (the sequencer fits snapshots to them)."""
        self.clients[number] = _Client(number, path, subscription)
        return self._resubscribe(now, joining=number)

    def disconnect(self, number: int, now: float) -> list[Lane]:
        """A connection closed; returns the lanes handed to another connection (served-once lanes)."""
        if self.clients.pop(number, None) is None:
            return []
        return self._resubscribe(now, joining=None)

    def _wants(self, client: _Client, lane: Lane) -> bool:
        if client.subscription is None or lane.name is None:
            return True
        return lane.name in client.subscription

    def _owner(self, lane: Lane, current: tuple[int, ...]) -> tuple[int, ...]:
        if current and current[0] in self.clients:
            return current
        matching = [n for n, c in self.clients.items() if c.path == lane.path]
        first = matching or list(self.clients)
        return (first[0],) if first else ()

    def _resubscribe(self, now: float, joining: int | None) -> list[Lane]:
        joined: list[Lane] = []
        for lane, st in zip(self.lanes, self.state, strict=True):
            if lane.routed:
                subs = tuple(n for n, c in self.clients.items() if self._wants(c, lane))
            else:
                subs = self._owner(lane, st.subscribers)
            new = set(subs) - set(st.subscribers)
            if not st.done and new and (joining in new or not lane.routed):
                joined.append(lane)
            if not st.subscribers and subs:
                self._resume(st, now)
            elif st.subscribers and not subs:
                st.held_since = now
            st.subscribers = subs
        return joined

    def _resume(self, st: _LaneState, now: float) -> None:
        if self.wall0 is None:
            self.wall0 = now
        if not st.started:
            st.started = True
            st.offset = now - self.wall0
        elif st.held_since is not None:
            st.offset += now - st.held_since
        st.held_since = None

    # -- sending

    def next_lane(self, key: Callable[[Lane, int, int], float]) -> Lane | None:
        """The lane whose next message comes first (``key(lane, message, loop)``: its recorded time)."""
        best: tuple[float, int, int] | None = None
        chosen: Lane | None = None
        for lane, st in zip(self.lanes, self.state, strict=True):
            if st.done or not st.subscribers:
                continue
            message = lane.messages[st.position]
            # ties keep the recorded order
            rank = (key(lane, message, st.loop), lane.stream_index, message)
            if best is None or rank < best:
                best, chosen = rank, lane
        return chosen

    def head(self, lane: Lane) -> tuple[int, int]:
        """(message index in the recorded connection, loop) of the lane's next message."""
        st = self.state[lane.index]
        return lane.messages[st.position], st.loop

    def upcoming(self, lane: Lane) -> tuple[int, ...]:
        """The lane's messages from its position to the end of the pass."""
        return lane.messages[self.state[lane.index].position :]

    def receivers(self, lane: Lane) -> tuple[int, ...]:
        return self.state[lane.index].subscribers

    def offset(self, lane: Lane) -> float:
        return self.state[lane.index].offset

    def advance(self, lane: Lane, sent: bool) -> bool:
        """Past the lane's next message; True when that completed a pass of the lane."""
        st = self.state[lane.index]
        st.sent += sent
        st.position += 1
        if st.position < len(lane.messages):
            return False
        if self.loop:
            st.position = 0
            st.loop += 1
        else:
            st.done = True
        return True

    # -- state

    @property
    def exhausted(self) -> bool:
        started = [st for lane, st in zip(self.lanes, self.state, strict=True) if lane.messages and st.started]
        return bool(started) and all(st.done for st in started)

    @property
    def loops_completed(self) -> int:
        # a stream nobody ever subscribed to does not hold back the passes of the others
        loops = [st.loop for lane, st in zip(self.lanes, self.state, strict=True) if lane.messages and st.started]
        return min(loops) if loops else 0

    def lane_stats(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for lane, st in zip(self.lanes, self.state, strict=True):
            label = lane.label if lane.label not in out else f"{lane.label}#ws.{lane.stream_index}"
            out[label] = {
                "position": st.position,
                "total": len(lane.messages),
                "loop": st.loop,
                "done": st.done,
                "sent": st.sent,
                "remaining": 0 if st.done else len(lane.messages) - st.position,
                "held": not st.done and not st.subscribers,
                "subscribers": list(st.subscribers),
            }
        return out
