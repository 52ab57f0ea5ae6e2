"""The lake's schema per channel, and the conversion of a block of buffer entries (events.py)
into an Arrow table. Documented in docs/lake-schema.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from svoe.feedpod.events import CHANNEL_FIELDS

_F64 = pa.float64()
_LEVELS = pa.list_(_F64)
_IDS = pa.list_(pa.string())

# Lake schema per channel. Every row is one cryptofeed callback, so rows are countable events.
# `svoe_id` is the Redis stream id of the event (`ms-seq`, kept for older readers); `svoe_ms` and
# `svoe_seq` are the same id as integers, which sort where the string does not (`-10` < `-9`);
# `svoe_writer` names the collector, so rows of redundant collectors can be told apart.
# `svoe_origin` is null as collected; on rows a compaction rewrote (svoe/lake/compact.py) it names
# the collector whose copy the row is, so that what each collector saw can still be told.
ORDER_COLUMNS = ("svoe_ms", "svoe_seq")
SVOE_COLUMNS = ("svoe_id", *ORDER_COLUMNS, "svoe_writer", "svoe_origin")
_COMMON = [
    ("svoe_id", pa.string()),
    ("svoe_ms", pa.int64()),
    ("svoe_seq", pa.int32()),
    ("svoe_writer", pa.string()),
    ("svoe_origin", pa.string()),
    ("timestamp", _F64),
    ("receipt_timestamp", _F64),
]
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
    # The feed's own events (svoe/feedpod/events.py FEED_EVENT_KINDS); `detail` is a JSON object.
    "feed_events": pa.schema(
        [
            *_COMMON,
            ("kind", pa.string()),
            ("event_channel", pa.string()),
            ("event_symbol", pa.string()),
            ("detail", pa.string()),
        ]
    ),
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


def identity_columns(channel: str) -> tuple[str, ...]:
    """The columns that identify an event by what the exchange sent: everything but svoe's own
    columns and the receipt time, which differ between collectors that saw the same message
    (docs/lake-schema.md, "Exactly once")."""
    return tuple(
        f.name for f in CHANNEL_SCHEMAS[channel] if f.name not in SVOE_COLUMNS and f.name != "receipt_timestamp"
    )


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


def to_table(channel: str, ids: Sequence[str], payloads: Sequence[bytes], writer: str) -> pa.Table:
    """Encoded events of one stream -> Arrow table in the channel's lake schema."""
    rows = [orjson.loads(p) for p in payloads]
    schema = CHANNEL_SCHEMAS[channel]
    id_array = pa.array(list(ids), pa.string())
    id_parts = pc.split_pattern(id_array, "-", max_splits=1)
    cols: dict[str, pa.Array] = {
        "svoe_id": id_array,
        "svoe_ms": pc.cast(pc.list_element(id_parts, 0), pa.int64()),
        "svoe_seq": pc.cast(pc.list_element(id_parts, 1), pa.int32()),
        "svoe_writer": pa.repeat(pa.scalar(writer, pa.string()), len(ids)),
        "svoe_origin": pa.nulls(len(ids), pa.string()),
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
