"""Decoding a block of buffer entries (events.py) into an Arrow table in the channel's lake
schema (lake_schema.py), in one vectorised pass.

DuckDB's JSON functions parse every event and extract every column in C++. Decoding with orjson
built a Python object per event and per book level, and Python loops flattened them: that was
most of the block writer's cost per event (docs/performance.md). The block writer is one process,
niced, beside the collector: DuckDB runs single-threaded there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from svoe.api.channels import CHANNELS, level_column
from svoe.feedpod.lake_schema import CHANNEL_SCHEMAS, SVOE_COLUMNS

_SQL_TYPES = {
    pa.float64(): "DOUBLE",
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.string(): "VARCHAR",
    pa.bool_(): "BOOLEAN",
}

_connection: Any = None


def _duckdb() -> Any:
    global _connection
    if _connection is None:
        import duckdb

        _connection = duckdb.connect(config={"threads": 1})
    return _connection


def _expressions(channel: str) -> Iterator[tuple[str, str]]:
    """(lake column, the SQL that extracts it from an event `j`, a JSON array) per column."""
    spec = CHANNELS[channel]
    types = {f.name: f.type for f in CHANNEL_SCHEMAS[channel]}
    for position, name in enumerate(spec.fields):
        if not spec.is_side(name):
            yield name, f"CAST(j->>{position} AS {_SQL_TYPES[types[name]]})"
            continue
        # A book side: one list column per part of its levels ([price, size], or with an order id).
        for k, part in enumerate(spec.level()):
            column = level_column(name, part)
            element = _SQL_TYPES[types[column].value_type]
            yield column, f"CAST(json_extract_string(j, '$[{position}][*][{k}]') AS {element}[])"


@cache
def decoded_schema(channel: str) -> pa.Schema:
    """The channel's lake columns that come from the event itself."""
    schema = CHANNEL_SCHEMAS[channel]
    return pa.schema([f for f in schema if f.name not in SVOE_COLUMNS])


@cache
def _query(channel: str) -> str:
    columns = ", ".join(f'{sql} AS "{name}"' for name, sql in _expressions(channel))
    return f"SELECT {columns} FROM events"


def decode_block(channel: str, payloads: Sequence[bytes]) -> pa.Table:
    """Encoded events of one stream -> the lake columns they hold, in the lake schema's types."""
    events = pa.table({"j": pa.array(payloads, pa.binary()).cast(pa.string())})
    con = _duckdb()
    con.register("events", events)
    try:
        table = con.sql(_query(channel)).to_arrow_table()
    finally:
        con.unregister("events")
    return table.cast(decoded_schema(channel))


def to_table(channel: str, ids: Sequence[str], payloads: Sequence[bytes], writer: str) -> pa.Table:
    """Encoded events of one stream, with their stream ids -> Arrow table in the lake schema."""
    schema = CHANNEL_SCHEMAS[channel]
    id_array = pa.array(list(ids), pa.string())
    id_parts = pc.split_pattern(id_array, "-", max_splits=1)
    decoded = decode_block(channel, payloads)
    cols: dict[str, pa.Array | pa.ChunkedArray] = {
        "svoe_id": id_array,
        "svoe_ms": pc.cast(pc.list_element(id_parts, 0), pa.int64()),
        "svoe_seq": pc.cast(pc.list_element(id_parts, 1), pa.int32()),
        "svoe_writer": pa.repeat(pa.scalar(writer, pa.string()), len(ids)),
        "svoe_origin": pa.nulls(len(ids), pa.string()),
    }
    return pa.table([cols[f.name] if f.name in cols else decoded[f.name] for f in schema], schema=schema)
