"""Decoding a block of buffer entries (events.py) into an Arrow table in the channel's lake
schema (svoe/lake/schema.py), in one vectorised pass.

DuckDB's JSON functions parse every event and extract every column in C++. Decoding with orjson
built a Python object per event and per book level, and Python loops flattened them: that was
most of the block writer's cost per event (docs/performance.md). The block writer is one process,
niced, beside the collector: DuckDB runs single-threaded there.
"""

from __future__ import annotations

import array
import itertools
from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any

import pyarrow as pa

from svoe.api.channels import CHANNELS, level_column
from svoe.lake.schema import CHANNEL_SCHEMAS

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


def _sides(channel: str) -> dict[int, str]:
    """Position in `v` -> the SQL that parses that book side's levels into a list of lists: typed
    when every part of a level has one type (L2), else text, each part cast on its own (L3)."""
    spec = CHANNELS[channel]
    out: dict[int, str] = {}
    for position, name in enumerate(spec.fields, start=1):
        if spec.is_side(name):
            parts = set(_level_types(channel, name))
            element = parts.pop() if len(parts) == 1 else "VARCHAR"
            out[position] = f"from_json(v[{position}], '[[\"{element}\"]]')"
    return out


def _level_types(channel: str, side: str) -> list[str]:
    types = {f.name: f.type for f in CHANNEL_SCHEMAS[channel]}
    return [_SQL_TYPES[types[level_column(side, part)].value_type] for part in CHANNELS[channel].level()]


def _expressions(channel: str) -> Iterator[tuple[str, str]]:
    """(lake column, the SQL that makes it from `v`, the event's fields as JSON text, and `s{n}`,
    the parsed levels of the book side at position n) per column."""
    spec = CHANNELS[channel]
    types = {f.name: f.type for f in CHANNEL_SCHEMAS[channel]}
    for position, name in enumerate(spec.fields, start=1):
        if not spec.is_side(name):
            yield name, f"CAST(v[{position}] AS {_SQL_TYPES[types[name]]})"
            continue
        # One list column per part of the side's levels ([price, size], or with an order id).
        parts = _level_types(channel, name)
        typed = len(set(parts)) == 1
        for k, (part, sql_type) in enumerate(zip(spec.level(), parts, strict=True), start=1):
            value = f"x[{k}]" if typed else f"CAST(x[{k}] AS {sql_type})"
            yield level_column(name, part), f"list_transform(s{position}, lambda x: {value})"


# An event's id is `ms-seq` (redis_buffer.split_entry); the writer's name comes as a parameter.
_SVOE_SQL = (
    "svoe_id, CAST(split_part(svoe_id, '-', 1) AS BIGINT) AS svoe_ms, "
    "CAST(split_part(svoe_id, '-', 2) AS INTEGER) AS svoe_seq, "
    "CAST($writer AS VARCHAR) AS svoe_writer, CAST(NULL AS VARCHAR) AS svoe_origin"
)


@cache
def _query(channel: str) -> str:
    columns = ", ".join(f'{sql} AS "{name}"' for name, sql in _expressions(channel))
    # Each event is parsed once, by one multi-path extraction, and each book side once more, into
    # lists. A path per column parsed the event once per column: 2.6 against 1.8 us per event.
    paths = ", ".join(f"'$[{i}]'" for i in range(len(CHANNELS[channel].fields)))
    fields = f"SELECT svoe_id, json_extract_string(j, [{paths}]) AS v FROM events"
    sides = "".join(f", {sql} AS s{position}" for position, sql in _sides(channel).items())
    return f"SELECT {_SVOE_SQL}, {columns} FROM (SELECT svoe_id, v{sides} FROM ({fields}))"


def _strings(values: Sequence[bytes] | Sequence[str], joined: bytes) -> pa.Array:
    """A string array from its values and their concatenation, built from the two buffers.

    `pa.array` of a Python list (and a compute function given a Python scalar) asks pandas whether
    the value is array-like, and so imports it: 0.39 CPU-seconds at every block writer's start,
    on a machine the pod saturates. The writer's whole path stays clear of it."""
    offsets = array.array("q", itertools.accumulate(map(len, values), initial=0))
    return pa.Array.from_buffers(pa.large_string(), len(values), [None, pa.py_buffer(offsets), pa.py_buffer(joined)])


def to_table(channel: str, ids: Sequence[str], payloads: Sequence[bytes], writer: str) -> pa.Table:
    """Encoded events of one stream, with their stream ids -> Arrow table in the lake schema."""
    schema = CHANNEL_SCHEMAS[channel]
    events = pa.table(
        {
            "svoe_id": _strings(ids, "".join(ids).encode()),  # ids are ASCII: one byte per character
            "j": _strings(payloads, b"".join(payloads)),
        }
    )
    con = _duckdb()
    con.register("events", events)
    try:
        table = con.sql(_query(channel), params={"writer": writer}).to_arrow_table()
    finally:
        con.unregister("events")
    return table.select(schema.names).cast(schema)
