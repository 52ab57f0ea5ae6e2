"""The lake's schema per channel, documented in docs/lake-schema.md: the feed pod's writers
(svoe/feedpod/block_decode.py turns a block of buffer entries into a table of it) and the lake's
readers share it, as they share the layout.
"""

from __future__ import annotations

import pyarrow as pa

from svoe.api.channels import CHANNELS, ChannelSpec, level_column

_F64 = pa.float64()
_STR = pa.string()

# Lake schema per channel. Every row is one cryptofeed callback, so rows are countable events.
# `svoe_id` is the Redis stream id of the event (`ms-seq`, kept for older readers); `svoe_ms` and
# `svoe_seq` are the same id as integers, which sort where the string does not (`-10` < `-9`);
# `svoe_writer` names the collector, so rows of redundant collectors can be told apart.
# `svoe_origin` is null as collected; on rows a compaction rewrote (svoe/lake/compact.py) it names
# the collector whose copy the row is, so that what each collector saw can still be told.
_SVOE_TYPES = {"svoe_id": _STR, "svoe_ms": pa.int64(), "svoe_seq": pa.int32(), "svoe_writer": _STR, "svoe_origin": _STR}
ORDER_COLUMNS = ("svoe_ms", "svoe_seq")
SVOE_COLUMNS = tuple(_SVOE_TYPES)

# The Arrow type of every field of the registry (svoe/api/channels.py), whatever its channel: a
# name means the same everywhere, and a field that is missing here fails at import.
FIELD_TYPES: dict[str, pa.DataType] = {
    **dict.fromkeys(("side", "id", "type", "interval", "status"), _STR),
    # The feed's own events (svoe/feedpod/events.py FEED_EVENT_KINDS); `detail` is a JSON object.
    **dict.fromkeys(("kind", "event_channel", "event_symbol", "detail"), _STR),
    **dict.fromkeys(("trades", "sequence_number"), pa.int64()),
    **dict.fromkeys(("closed", "snapshot"), pa.bool_()),
    **dict.fromkeys(
        ("timestamp", "receipt_timestamp", "amount", "price", "quantity", "bid", "ask", "start", "stop"), _F64
    ),
    **dict.fromkeys(("open", "close", "high", "low", "volume", "open_interest"), _F64),
    **dict.fromkeys(("mark_price", "rate", "next_funding_time", "predicted_rate"), _F64),
}
# Books: one row per update event. Level lists are parallel arrays (price[i], size[i]); a size of 0
# deletes the level. `snapshot` rows hold the whole book after the event (cryptofeed's initial and
# resync snapshots, and every `book.snapshotInterval`-th update when configured).
LEVEL_TYPES: dict[str, pa.DataType] = {"order_id": _STR, "price": _F64, "size": _F64}


def _schema(channel: ChannelSpec) -> pa.Schema:
    columns: list[tuple[str, pa.DataType]] = list(_SVOE_TYPES.items())
    for name in channel.fields:
        if channel.is_side(name):
            columns += [(level_column(name, part), pa.list_(LEVEL_TYPES[part])) for part in channel.level()]
        else:
            columns.append((name, FIELD_TYPES[name]))
    return pa.schema(columns)


CHANNEL_SCHEMAS: dict[str, pa.Schema] = {name: _schema(c) for name, c in CHANNELS.items()}


def identity_columns(channel: str) -> tuple[str, ...]:
    """The columns that identify an event by what the exchange sent: everything but svoe's own
    columns and the receipt time, which differ between collectors that saw the same message
    (docs/lake-schema.md, "Exactly once")."""
    return tuple(
        f.name for f in CHANNEL_SCHEMAS[channel] if f.name not in SVOE_COLUMNS and f.name != "receipt_timestamp"
    )
