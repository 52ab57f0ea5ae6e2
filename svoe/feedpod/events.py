"""Normalized events: how the collector encodes a cryptofeed object for the Redis buffer, and how
the aggregator and live subscribers read it back. The lake schema is in svoe/lake/schema.py.

The buffer format is a compact JSON array per event, positional per channel (the field names live
in the channel registry, svoe/api/channels.py, not in every entry). Decimals are kept as strings so
nothing is rounded before the lake; the lake stores them as float64 (see docs/lake-schema.md).
Exchange and symbol are not in the entry: the stream key carries them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from svoe.api.channels import CHANNELS, SIMPLE_CHANNELS, keyed
from svoe.api.channels import FEED_EVENTS as FEED_EVENTS
from svoe.api.channels import FEED_SYMBOL as FEED_SYMBOL

Encoder = Callable[[Any, float], bytes]

# The registry's fields per channel, for readers of the buffer that only need the names.
CHANNEL_FIELDS: dict[str, tuple[str, ...]] = {name: c.fields for name, c in CHANNELS.items()}

FEED_EVENT_KINDS = (
    "start",  # the collector started (detail: pid, streams)
    "stop",  # it stopped cleanly, after writing out its buffer
    "connect",  # a websocket connection opened and subscribed (detail: connection, streams)
    "disconnect",  # it closed while the collector was running
    "gap",  # cryptofeed found a book sequence gap and dropped the book (detail: seq_before)
    "resync",  # a book snapshot after the first of its symbol (detail: seq_after)
    "malformed",  # a message failed to parse and was skipped (detail: error)
    "backpressure_on",  # the Redis buffer is full: the feed's reading waits
    "backpressure_off",
)
# The kinds that mean market data may be missing: what /stats counts as gapsLastHour. A resync
# is left out, since it follows a gap (cryptofeed refetches the book) and would count it twice.
GAP_KINDS = frozenset({"gap", "disconnect"})


def encode_feed_event(kind: str, at: float, channel: str | None, symbol: str | None, detail: dict[str, Any]) -> bytes:
    return _dumps([None, at, kind, channel, symbol, orjson.dumps(detail, default=str).decode()])


def _dumps(v: list[Any]) -> bytes:
    return orjson.dumps(v, default=str)


def encode_trade(t: Any, rts: float) -> bytes:
    return _dumps([t.timestamp, rts, t.side, t.amount, t.price, t.id, t.type])


def encode_ticker(t: Any, rts: float) -> bytes:
    return _dumps([t.timestamp, rts, t.bid, t.ask])


def encode_candle(c: Any, rts: float) -> bytes:
    return _dumps(
        [c.timestamp, rts, c.start, c.stop, c.interval, c.trades, c.open, c.close, c.high, c.low, c.volume, c.closed]
    )


def encode_funding(f: Any, rts: float) -> bytes:
    return _dumps([f.timestamp, rts, f.mark_price, f.rate, f.next_funding_time, f.predicted_rate])


def encode_open_interest(o: Any, rts: float) -> bytes:
    return _dumps([o.timestamp, rts, o.open_interest])


def encode_liquidation(liq: Any, rts: float) -> bytes:
    return _dumps([liq.timestamp, rts, liq.side, liq.quantity, liq.price, liq.id, liq.status])


def _l3_levels(side: Any, depth: int) -> list[tuple[Any, Any, Any]]:
    out: list[tuple[Any, Any, Any]] = []
    for price, orders in side.to_dict().items():
        for oid, size in orders.items():
            out.append((oid, price, size))
        if depth and len(out) >= depth:
            break
    return out


def encode_book(book: Any, rts: float, full: bool, depth: int, l3: bool) -> bytes:
    """One book event. `full` stores the whole book (snapshot row) instead of the delta."""
    if full or book.delta is None:
        if l3:
            bids: Any = _l3_levels(book.book.bids, depth)
            asks: Any = _l3_levels(book.book.asks, depth)
        else:
            bids = book.book.bids.to_list()
            asks = book.book.asks.to_list()
            if depth:
                bids, asks = bids[:depth], asks[:depth]
        return _dumps([book.timestamp, rts, book.sequence_number, 1, bids, asks])
    d = book.delta
    return _dumps([book.timestamp, rts, book.sequence_number, 0, d["bid"], d["ask"]])


# Books have encode_book, the feed's events encode_feed_event; every other channel one of these.
SIMPLE_ENCODERS: dict[str, Encoder] = keyed(
    {
        "trades": encode_trade,
        "ticker": encode_ticker,
        "candles": encode_candle,
        "funding": encode_funding,
        "open_interest": encode_open_interest,
        "liquidations": encode_liquidation,
    },
    SIMPLE_CHANNELS,
    "events.SIMPLE_ENCODERS",
)


def decode(channel: str, payload: bytes) -> dict[str, Any]:
    """A buffer entry as a dict of named fields (for live subscribers and debugging)."""
    return dict(zip(CHANNEL_FIELDS[channel], orjson.loads(payload), strict=True))
