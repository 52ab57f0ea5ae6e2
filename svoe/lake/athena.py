"""`svoe lake sql --athena WORKGROUP`: the same views, in Athena, over the Glue catalog.

The Glue tables (one per channel, docs/lake-schema.md) hold the stored rows. A query names the
views as `svoe lake sql` does (`trades` exactly once, `raw_trades` as stored); each view it uses is
put in front of it as a WITH clause in Athena's (Trino's) dialect, so nothing is created in the
catalog and every reader sees the same rule.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

from svoe.lake.layout import PARTITIONS
from svoe.lake.scan import LakeError
from svoe.lake.schema import CHANNEL_SCHEMAS
from svoe.lake.view import FILLED, identity_sql, quote


def _columns(channel: str) -> list[str]:
    """The channel's columns as Glue tables of every svoe version have them: `svoe_origin`, which
    only compaction fills in and only `svoe lake gaps` reads, is left out."""
    return [n for n in CHANNEL_SCHEMAS[channel].names if n != "svoe_origin"]


def _filled(database: str, channel: str) -> str:
    cols = []
    for f in CHANNEL_SCHEMAS[channel]:
        if f.name not in _columns(channel):
            continue
        cols.append(f"{FILLED[f.name]} AS {f.name}" if f.name in FILLED else quote(f.name))
    cols += [quote(p) for p in PARTITIONS]
    return f"SELECT {', '.join(cols)} FROM {quote(database)}.{quote(channel)}"


def view_sql(database: str, channel: str) -> str:
    """The exactly-once view of svoe/lake/view.py, spelled for Trino (no EXCLUDE or REPLACE)."""
    identity = identity_sql(channel, collector="svoe_writer")  # Glue tables may predate svoe_origin
    out = ", ".join(quote(n) for n in [*_columns(channel), *PARTITIONS])
    order = "ORDER BY svoe_ms, svoe_seq"
    return (
        f"SELECT {out} FROM (SELECT *, row_number() OVER (PARTITION BY exchange, symbol, {identity}, _occurrence "
        "ORDER BY _seen, svoe_writer, svoe_ms, svoe_seq) AS _pick FROM (SELECT *, "
        f"row_number() OVER (PARTITION BY exchange, symbol, svoe_writer, {identity} {order}) AS _occurrence, "
        f"max(receipt_timestamp) OVER (PARTITION BY exchange, symbol, svoe_writer {order} "
        f"ROWS UNBOUNDED PRECEDING) AS _seen FROM ({_filled(database, channel)}) AS filled) AS ranked) AS picked "
        "WHERE _pick = 1"
    )


def with_views(query: str, database: str) -> str:
    """The query with a WITH clause for every view it names."""
    ctes = []
    for channel in CHANNEL_SCHEMAS:
        if re.search(rf"\braw_{channel}\b", query):
            ctes.append(f"{quote('raw_' + channel)} AS ({_filled(database, channel)})")
        if re.search(rf"(?<![\w.\"]){channel}\b(?!\s*\()", re.sub(rf"\braw_{channel}\b", "", query)):
            ctes.append(f"{quote(channel)} AS ({view_sql(database, channel)})")
    if not ctes:
        return query
    body = query.lstrip()
    if body[:4].upper() == "WITH":
        return f"WITH {', '.join(ctes)}, {body[4:].lstrip()}"
    return f"WITH {', '.join(ctes)} {body}"


# Athena's result types, as get_query_results reports them, to Arrow.
_TYPES = {
    "boolean": pa.bool_(),
    "tinyint": pa.int64(),
    "smallint": pa.int64(),
    "integer": pa.int64(),
    "bigint": pa.int64(),
    "float": pa.float64(),
    "real": pa.float64(),
    "double": pa.float64(),
    "decimal": pa.float64(),
}


def _value(text: str | None, kind: pa.DataType) -> Any:
    if text is None:
        return None
    if kind == pa.bool_():
        return text.lower() == "true"
    if kind == pa.int64():
        return int(text)
    if kind == pa.float64():
        return float(text)
    return text


def results_table(pages: list[dict[str, Any]]) -> pa.Table:
    """get_query_results pages -> Arrow. The first row of the first page repeats the header."""
    if not pages:
        return pa.table({})
    info = pages[0]["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]
    names = [c["Name"] for c in info]
    kinds = [_TYPES.get(c.get("Type", "varchar").lower(), pa.string()) for c in info]
    rows = [r["Data"] for p in pages for r in p["ResultSet"].get("Rows", [])]
    if rows and [d.get("VarCharValue") for d in rows[0]] == names:
        rows = rows[1:]
    columns = [
        pa.array([_value(r[i].get("VarCharValue") if i < len(r) else None, k) for r in rows], k)
        for i, k in enumerate(kinds)
    ]
    return pa.table(columns, names=names)


def athena_query(query: str, workgroup: str, database: str | None, output: str | None = None) -> pa.Table:
    """Run the query in Athena and read its rows through the API (not the CSV in S3): results of
    interactive queries are small, and it works wherever the Athena API does."""
    if not database:
        raise LakeError("--athena needs --database: the Glue database the feed writes (spec.storage.glueDatabase)")
    import awswrangler as wr
    import boto3

    sql = with_views(query, database)
    try:
        qid = wr.athena.start_query_execution(sql, database=database, workgroup=workgroup, s3_output=output)
        state = wr.athena.wait_query(qid)["Status"]
        if state["State"] != "SUCCEEDED":
            raise LakeError(f"the Athena query {qid} ended {state['State']}: {state.get('StateChangeReason', '')}")
        pages = list(boto3.client("athena").get_paginator("get_query_results").paginate(QueryExecutionId=qid))
    except LakeError:
        raise
    except Exception as err:  # botocore's and awswrangler's errors carry the reason in their message
        raise LakeError(f"the Athena query failed in workgroup {workgroup}: {err}") from None
    return results_table(pages)
