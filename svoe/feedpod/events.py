"""Normalized events: how the collector encodes a cryptofeed object for the Redis buffer, and how
the aggregator turns a block of encoded events into an Arrow table for the lake.

The buffer format is a compact JSON array per event, positional per channel (field names live in
CHANNEL_FIELDS, not in every entry). Decimals are kept as strings so nothing is rounded before the
lake; the lake stores them as float64 (see docs/lake-schema.md). Exchange and symbol are not in the
entry: the stream key carries them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

Encoder = Callable[[Any, float], bytes]

# Positional fields of each channel's buffer entry, after which the lake columns are named.
CHANNEL_FIELDS: dict[str, tuple[str, ...]] = {
    "trades": ("timestamp", "receipt_timestamp", "side", "amount", "price", "id", "type"),
    "ticker": ("timestamp", "receipt_timestamp", "bid", "ask"),
    "candles": (
        "timestamp",
        "receipt_timestamp",
        "start",
        "stop",
        "interval",
        "trades",
        "open",
        "close",
        "high",
        "low",
        "volume",
        "closed",
    ),
    "funding": ("timestamp", "receipt_timestamp", "mark_price", "rate", "next_funding_time", "predicted_rate"),
    "open_interest": ("timestamp", "receipt_timestamp", "open_interest"),
    "liquidations": ("timestamp", "receipt_timestamp", "side", "quantity", "price", "id", "status"),
    "l2_book": ("timestamp", "receipt_timestamp", "sequence_number", "snapshot", "bids", "asks"),
    "l3_book": ("timestamp", "receipt_timestamp", "sequence_number", "snapshot", "bids", "asks"),
}

_F64 = pa.float64()
_LEVELS = pa.list_(_F64)
_IDS = pa.list_(pa.string())

# Lake schema per channel. Every row is one cryptofeed callback, so rows are countable events.
# `svoe_id` is the Redis stream id of the event: unique per stream, so duplicates are detectable.
_COMMON = [("svoe_id", pa.string()), ("timestamp", _F64), ("receipt_timestamp", _F64)]
CHANNEL_SCHEMAS: dict[str, pa.Schema] = {
    "trades": pa.schema(
        [*_COMMON, ("side", pa.string()), ("amount", _F64), ("price", _F64), ("id", pa.string()), ("type", pa.string())]
    ),
    "ticker": pa.schema([*_COMMON, ("bid", _F64), ("ask", _F64)]),
    "candles": pa.schema(
        [
            *_COMMON,
            ("start", _F64),
            ("stop", _F64),
            ("interval", pa.string()),
            ("trades", pa.int64()),
            ("open", _F64),
            ("close", _F64),
            ("high", _F64),
            ("low", _F64),
            ("volume", _F64),
            ("closed", pa.bool_()),
        ]
    ),
    "funding": pa.schema(
        [*_COMMON, ("mark_price", _F64), ("rate", _F64), ("next_funding_time", _F64), ("predicted_rate", _F64)]
    ),
    "open_interest": pa.schema([*_COMMON, ("open_interest", _F64)]),
    "liquidations": pa.schema(
        [
            *_COMMON,
            ("side", pa.string()),
            ("quantity", _F64),
            ("price", _F64),
            ("id", pa.string()),
            ("status", pa.string()),
        ]
    ),
    # Books: one row per update event. Level lists are parallel arrays (price[i], size[i]); a size
    # of 0 deletes the level. `snapshot` rows hold the whole book after the event (cryptofeed's
    # initial and resync snapshots, and every `book.snapshotInterval`-th update when configured).
    "l2_book": pa.schema(
        [
            *_COMMON,
            ("sequence_number", pa.int64()),
            ("snapshot", pa.bool_()),
            ("bid_price", _LEVELS),
            ("bid_size", _LEVELS),
            ("ask_price", _LEVELS),
            ("ask_size", _LEVELS),
        ]
    ),
    "l3_book": pa.schema(
        [
            *_COMMON,
            ("sequence_number", pa.int64()),
            ("snapshot", pa.bool_()),
            ("bid_order_id", _IDS),
            ("bid_price", _LEVELS),
            ("bid_size", _LEVELS),
            ("ask_order_id", _IDS),
            ("ask_price", _LEVELS),
            ("ask_size", _LEVELS),
        ]
    ),
}


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


SIMPLE_ENCODERS: dict[str, Encoder] = {
    "trades": encode_trade,
    "ticker": encode_ticker,
    "candles": encode_candle,
    "funding": encode_funding,
    "open_interest": encode_open_interest,
    "liquidations": encode_liquidation,
}


def decode(channel: str, payload: bytes) -> dict[str, Any]:
    """A buffer entry as a dict of named fields (for live subscribers and debugging)."""
    return dict(zip(CHANNEL_FIELDS[channel], orjson.loads(payload), strict=True))


def _num(values: Sequence[Any]) -> pa.Array:
    """Strings, numbers or None -> float64 (exact decimal strings parse to the nearest double)."""
    arr = pa.array([None if v is None else str(v) for v in values], pa.string())
    return pc.cast(arr, _F64)


def _str(values: Sequence[Any]) -> pa.Array:
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def _levels(rows: Sequence[Sequence[Any]], idx: int) -> pa.Array:
    """List-of-levels column idx (0 = first element of each level) as list<float64>."""
    offsets = [0]
    flat: list[str] = []
    for levels in rows:
        flat.extend(str(level[idx]) for level in levels)
        offsets.append(len(flat))
    values = pc.cast(pa.array(flat, pa.string()), _F64)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def _level_ids(rows: Sequence[Sequence[Any]]) -> pa.Array:
    offsets = [0]
    flat: list[str] = []
    for levels in rows:
        flat.extend(str(level[0]) for level in levels)
        offsets.append(len(flat))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, pa.string()))


def to_table(channel: str, ids: Sequence[str], payloads: Sequence[bytes]) -> pa.Table:
    """Encoded events of one stream -> Arrow table in the channel's lake schema."""
    rows = [orjson.loads(p) for p in payloads]
    schema = CHANNEL_SCHEMAS[channel]
    cols: dict[str, pa.Array] = {
        "svoe_id": pa.array(list(ids), pa.string()),
        "timestamp": _num([r[0] for r in rows]),
        "receipt_timestamp": _num([r[1] for r in rows]),
    }
    if channel in ("l2_book", "l3_book"):
        cols["sequence_number"] = pa.array([r[2] for r in rows], pa.int64())
        cols["snapshot"] = pa.array([bool(r[3]) for r in rows], pa.bool_())
        bids = [r[4] for r in rows]
        asks = [r[5] for r in rows]
        if channel == "l3_book":
            cols["bid_order_id"] = _level_ids(bids)
            cols["bid_price"], cols["bid_size"] = _levels(bids, 1), _levels(bids, 2)
            cols["ask_order_id"] = _level_ids(asks)
            cols["ask_price"], cols["ask_size"] = _levels(asks, 1), _levels(asks, 2)
        else:
            cols["bid_price"], cols["bid_size"] = _levels(bids, 0), _levels(bids, 1)
            cols["ask_price"], cols["ask_size"] = _levels(asks, 0), _levels(asks, 1)
    else:
        for i, name in enumerate(CHANNEL_FIELDS[channel][2:], start=2):
            field = schema.field(name)
            column = [r[i] for r in rows]
            if field.type == _F64:
                cols[name] = _num(column)
            elif field.type == pa.string():
                cols[name] = _str(column)
            else:
                cols[name] = pa.array(column, field.type)
    return pa.table([cols[f.name] for f in schema], schema=schema)
