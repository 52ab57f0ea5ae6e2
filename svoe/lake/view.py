"""The exactly-once view: the rule that turns the rows stored by any number of collectors into each
exchange event once. Pure SQL text over a relation in the lake schema (DuckDB's dialect).

The rule (docs/lake-schema.md, "Exactly once"):
- An event's identity is what the exchange sent: every column of the channel except svoe's own
  and the receipt time (`identity_columns`), within its exchange and symbol. Two collectors that
  saw the same exchange message store rows with the same identity.
- A stream may legitimately hold two events with one identity (the same trade printed twice in a
  row). Each writer's rows of one identity are numbered in its own order (the occurrence); the view
  keeps occurrence k if any writer saw k of them, so it holds as many as the writer that saw most.
- Of the copies of one (identity, occurrence), the view keeps the one seen first. Its order is
  receipt time made monotonic within each writer (a running maximum over the writer's own order),
  then writer, then the integer key: this keeps every writer's own order of the events it saw.

Rows from lakes written before `svoe_ms`, `svoe_seq` and `svoe_writer` existed get them from
`svoe_id` and an empty writer.
"""

from __future__ import annotations

from svoe.api.channels import FEED_EVENTS
from svoe.lake.schema import identity_columns

# The order of rows within one stream of the view, and of one writer's stored rows.
VIEW_ORDER = ("exchange", "symbol", "_seen", "svoe_writer", "svoe_ms", "svoe_seq")
RAW_ORDER = ("exchange", "symbol", "svoe_ms", "svoe_seq", "svoe_writer")


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def identity_sql(channel: str, collector: str = "coalesce(svoe_origin, svoe_writer)") -> str:
    return ", ".join(_identity_named(channel, collector))


def _identity_named(channel: str, collector: str = "coalesce(svoe_origin, svoe_writer)") -> list[str]:
    """The identity's expressions. Where the exchange sends no event time, cryptofeed puts the
    receipt time in `timestamp` (Binance spot tickers, for one): such a timestamp is the
    collector's, not the exchange's, and is left out of the identity.

    A feed event is a fact about one collector, so its identity is that collector (the writer, or
    on compacted rows the original writer) and when it recorded it: two replicas' disconnects are
    two events, and a compacted copy is the same event as the row it was made from."""
    if channel == FEED_EVENTS:
        return [collector, "receipt_timestamp", *(quote(c) for c in identity_columns(channel) if c != "timestamp")]
    cols = []
    for c in identity_columns(channel):
        if c == "timestamp":
            cols.append("(CASE WHEN timestamp = receipt_timestamp THEN NULL ELSE timestamp END)")
        else:
            cols.append(quote(c))
    return cols


# The integer key and writer of rows from older files, which have only `svoe_id`. Plain SQL, so
# the Athena spelling of the view (athena.py) uses the same expressions.
FILLED = {
    "svoe_ms": "coalesce(svoe_ms, CAST(split_part(svoe_id, '-', 1) AS BIGINT))",
    "svoe_seq": "coalesce(svoe_seq, CAST(split_part(svoe_id, '-', 2) AS INTEGER))",
    "svoe_writer": "coalesce(svoe_writer, '')",
}


def filled_sql(source: str) -> str:
    """Stored rows, with the integer key and writer filled in for older files."""
    return f"SELECT * REPLACE ({', '.join(f'{e} AS {c}' for c, e in FILLED.items())}) FROM {source}"


def exactly_once_sql(channel: str, source: str, ordered: bool = False, keep_seen: bool = False) -> str:
    """The view's rows (all stored columns); `ordered` sorts them in view order. `keep_seen` keeps
    `_seen`, the receipt time made monotonic, which is non-decreasing in view order."""
    identity = identity_sql(channel)
    writer_order = "ORDER BY svoe_ms, svoe_seq"
    sql = (
        f"WITH base AS ({filled_sql(source)}), "
        "ranked AS (SELECT *, "
        f"row_number() OVER (PARTITION BY exchange, symbol, svoe_writer, {identity} {writer_order}) AS _occurrence, "
        f"max(receipt_timestamp) OVER (PARTITION BY exchange, symbol, svoe_writer {writer_order} "
        "ROWS UNBOUNDED PRECEDING) AS _seen FROM base), "
        "picked AS (SELECT *, row_number() OVER (PARTITION BY exchange, symbol, "
        f"{identity}, _occurrence ORDER BY _seen, svoe_writer, svoe_ms, svoe_seq) AS _pick FROM ranked) "
    )
    excluded = "_occurrence, _pick" if keep_seen else "_occurrence, _pick, _seen"
    sql += f"SELECT * EXCLUDE ({excluded}) FROM picked WHERE _pick = 1"
    return sql + f" ORDER BY {', '.join(VIEW_ORDER)}" if ordered else sql


def raw_sql(source: str, ordered: bool = False) -> str:
    sql = filled_sql(source)
    return f"{sql} ORDER BY {', '.join(RAW_ORDER)}" if ordered else sql


def exactly_once_counts_sql(channel: str, source: str) -> str:
    """(exchange, symbol, events) of the view, without materialising it: per identity, the most
    occurrences any writer saw, summed."""
    named = _identity_named(channel)
    aliases = ", ".join(f"_i{i}" for i in range(len(named)))
    selected = ", ".join(f"{e} AS _i{i}" for i, e in enumerate(named))
    return (
        "SELECT exchange, symbol, CAST(sum(n) AS BIGINT) AS events FROM ("
        "SELECT exchange, symbol, max(n) AS n FROM ("
        f"SELECT exchange, symbol, svoe_writer, {selected}, count(*) AS n FROM ({filled_sql(source)}) "
        "GROUP BY ALL"
        f") GROUP BY exchange, symbol, {aliases}"
        ") GROUP BY exchange, symbol"
    )
