"""`Lake`: the lake read back, through the exactly-once view by default.

    from svoe.lake import Lake
    lake = Lake("./lake")                      # or "s3://bucket/prefix"
    trades = lake.read("trades", exchange="BINANCE", symbols=["NKN-USDT"], start="2021-10-01T10:00", end=...)
    lake.sql("SELECT symbol, count(*) FROM trades GROUP BY symbol")

Times are epoch seconds or ISO-8601 (UTC unless an offset is given) and filter on the receipt time:
`start <= receipt_timestamp < end`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from svoe.api.durations import parse_interval
from svoe.lake.books import BookError, book_at, snapshots
from svoe.lake.scan import Block, LakeError, LakeScanner, check_channel
from svoe.lake.view import exactly_once_sql, raw_sql

Time = float | int | str | dt.datetime

# How far apart two collectors' receipt times of one event may be. A book is rebuilt from a
# checkpoint, and the view is taken from this much earlier, so that an event another collector
# saw first, just before the checkpoint, keeps its place before it.
WRITER_SKEW = 10.0


def parse_time(value: Time, name: str = "time") -> float:
    """Epoch seconds from a number, a numeric string or ISO-8601."""
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise LakeError(
            f"{name} {value!r} is not a time: use epoch seconds (1633046400.25) or ISO-8601 (2021-10-01T00:00:00.250Z)"
        ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def _dates(start: float | None, end: float | None) -> set[str] | None:
    """UTC dates a receipt-time window touches (the `date` partition), or None for all."""
    if start is None or end is None:
        return None
    first = dt.datetime.fromtimestamp(start, dt.UTC).date()
    last = dt.datetime.fromtimestamp(max(start, end), dt.UTC).date()
    if (last - first).days > 3660:
        return None
    return {str(first + dt.timedelta(days=i)) for i in range((last - first).days + 1)}


def _first_ms(block: Block) -> int:
    return int(block.key.first_id.split("-", 1)[0])


def skip_blocks_before(blocks: list[Block], t0: float) -> list[Block]:
    """Leave out blocks that end before `t0`, by their names alone: an event's stream id is taken
    after its receipt, so every event of a block was received before the writer's next block
    starts. Blocks without a writer (older layouts) are all kept: their names may interleave."""
    by_writer: dict[tuple[str, str, str], list[Block]] = {}
    kept = [b for b in blocks if b.key.writer is None]
    for b in blocks:
        if b.key.writer is not None:
            by_writer.setdefault((b.key.exchange, b.key.symbol, b.key.writer), []).append(b)
    for own in by_writer.values():
        own.sort(key=_first_ms)
        kept += [b for b, nxt in zip(own, [*own[1:], None], strict=True) if nxt is None or _first_ms(nxt) / 1000 >= t0]
    return kept


def duckdb_connection() -> Any:
    import duckdb

    con = duckdb.connect()
    # Nothing is fetched at run time: the lake is scanned through pyarrow, not DuckDB extensions.
    con.execute("SET autoinstall_known_extensions = false")
    return con


class Lake:
    def __init__(self, url: str) -> None:
        self.url = url
        self.scanner = LakeScanner(url)

    # ---- what is there --------------------------------------------------------------------------
    def channels(self) -> list[str]:
        return self.scanner.channels()

    def _blocks(
        self, channel: str, exchange: str | None, symbols: Sequence[str] | None, dates: set[str] | None
    ) -> list[Block]:
        """The selection's blocks; an exchange or symbol the lake does not hold is an error that
        says what it does hold."""
        check_channel(channel)
        blocks = self.scanner.blocks([channel], exchange, symbols)
        have_syms = {b.key.symbol for b in blocks}
        missing = [s for s in symbols or [] if s not in have_syms]
        if not blocks or missing:
            present = self.scanner.blocks([channel])
            if not present:
                have = self.channels()
                raise LakeError(
                    f"the lake {self.url} holds no {channel}: it has " + (", ".join(have) if have else "no data at all")
                )
            exchanges = sorted({b.key.exchange for b in present})
            if exchange is not None and exchange not in exchanges:
                raise LakeError(f"no {channel} of exchange {exchange!r} in {self.url}: it has {', '.join(exchanges)}")
            known = sorted({b.key.symbol for b in present if exchange is None or b.key.exchange == exchange})
            shown = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
            raise LakeError(
                f"no {channel} of {exchange or 'any exchange'} for symbol(s) {', '.join(missing)}: it has {shown}"
            )
        return [b for b in blocks if dates is None or b.key.date in dates]

    # ---- reading --------------------------------------------------------------------------------
    def read(
        self,
        channel: str,
        exchange: str | None = None,
        symbols: Sequence[str] | str | None = None,
        start: Time | None = None,
        end: Time | None = None,
        raw: bool = False,
        columns: Sequence[str] | None = None,
        keep_seen: bool = False,
    ) -> pa.Table:
        """Events of one channel as a pyarrow Table, in view order (raw: each writer's key order).
        Only the partitions of the asked-for exchange, symbols and dates are listed, and row
        groups outside the time window are skipped by their statistics."""
        t0 = None if start is None else parse_time(start, "start")
        t1 = None if end is None else parse_time(end, "end")
        if t0 is not None and t1 is not None and t1 <= t0:
            raise LakeError(f"end {_iso(t1)} is not after start {_iso(t0)}")
        syms = [symbols] if isinstance(symbols, str) else symbols
        blocks = self._blocks(channel, exchange, syms, _dates(t0, t1))
        if t0 is not None:
            blocks = skip_blocks_before(blocks, t0)
        if not blocks:
            return self._no_data(channel, exchange, syms, t0, t1)
        table = self.scanner.dataset(channel, blocks).to_table(filter=self._filter(t0, t1))
        if table.num_rows == 0 and (t0 is not None or t1 is not None):
            return self._no_data(channel, exchange, syms, t0, t1)
        con = duckdb_connection()
        con.register("stored", table)
        query = raw_sql("stored", True) if raw else exactly_once_sql(channel, "stored", True, keep_seen)
        out: pa.Table = con.sql(query).to_arrow_table()
        return out.select(list(columns)) if columns else out

    @staticmethod
    def _filter(t0: float | None, t1: float | None) -> ds.Expression | None:
        expr: ds.Expression | None = None
        rt = ds.field("receipt_timestamp")
        if t0 is not None:
            expr = rt >= t0
        if t1 is not None:
            expr = (rt < t1) if expr is None else expr & (rt < t1)
        return expr

    def _no_data(
        self, channel: str, exchange: str | None, symbols: Sequence[str] | None, t0: float | None, t1: float | None
    ) -> pa.Table:
        span = self.time_span(channel, exchange, symbols)
        what = f"{channel} of {exchange or 'any exchange'}" + (f" {', '.join(symbols)}" if symbols else "")
        window = f"from {_iso(t0) if t0 is not None else 'the start'} to {_iso(t1) if t1 is not None else 'the end'}"
        held = f"it holds them from {_iso(span[0])} to {_iso(span[1])}" if span else "it holds none"
        raise LakeError(f"no {what} received {window}: {held}")

    def time_span(
        self, channel: str, exchange: str | None, symbols: Sequence[str] | None
    ) -> tuple[float, float] | None:
        """First and last receipt time of a selection, from row-group statistics where present."""
        blocks = self._blocks(channel, exchange, symbols, None)
        if not blocks:
            return None
        table = self.scanner.dataset(channel, blocks).to_table(columns=["receipt_timestamp"])
        if table.num_rows == 0:
            return None
        mm = pc.min_max(table["receipt_timestamp"]).as_py()
        return float(mm["min"]), float(mm["max"])

    # ---- SQL ------------------------------------------------------------------------------------
    def connection(self) -> Any:
        """A DuckDB connection with a view per channel (`trades`, `l2_book`, ...: exactly once)
        and `raw_<channel>` (the stored rows), partition columns included."""
        con = duckdb_connection()
        for channel in self.channels():
            blocks = self.scanner.blocks([channel])
            if not blocks:
                continue
            con.register(f"_stored_{channel}", self.scanner.dataset(channel, blocks))
            con.execute(f'CREATE VIEW "raw_{channel}" AS {raw_sql(f"_stored_{channel}")}')
            con.execute(f'CREATE VIEW "{channel}" AS {exactly_once_sql(channel, f"_stored_{channel}")}')
        return con

    def sql(self, query: str) -> pa.Table:
        import duckdb

        con = self.connection()
        try:
            result = con.sql(query)
        except duckdb.Error as err:
            raise LakeError(f"the query failed: {err}") from None
        if result is None:
            raise LakeError("the query returned no result set: pass a SELECT")
        table: pa.Table = result.to_arrow_table()
        return table

    # ---- books ----------------------------------------------------------------------------------
    def checkpoint(self, exchange: str, symbol: str, at: float) -> float | None:
        """Receipt time of a snapshot row at or before `at` (the latest, in the newest block that
        has one): where rebuilding a book at `at` starts. Blocks are visited newest first and
        only their `receipt_timestamp` and `snapshot` columns are read."""
        blocks = self._blocks("l2_book", exchange, [symbol], None)
        day = dt.datetime.fromtimestamp(at, dt.UTC).date().isoformat()
        candidates = [b for b in blocks if b.key.date <= day and _first_ms(b) / 1000 <= at + WRITER_SKEW]
        candidates.sort(key=_first_ms, reverse=True)
        found = (ds.field("snapshot") == True) & (ds.field("receipt_timestamp") <= at)  # noqa: E712
        for block in candidates:
            rows = self.scanner.dataset("l2_book", [block], check=False).to_table(
                columns=["receipt_timestamp"], filter=found
            )
            if rows.num_rows:
                return float(pc.max(rows["receipt_timestamp"]).as_py())
        return None

    def book_rows(self, exchange: str, symbol: str, start: float | None, end: float) -> pa.Table:
        """The view's l2_book rows from a checkpoint at or before `start` (from the first row when
        None) through `end`, with receipt times made monotonic as the view orders them."""
        first = None if start is None else self.checkpoint(exchange, symbol, start)
        t0 = None if first is None else first - WRITER_SKEW
        try:
            table = self.read(
                "l2_book", exchange, [symbol], start=t0, end=math.nextafter(end, math.inf), keep_seen=True
            )
        except LakeError:
            if t0 is None:
                raise
            table = self.read("l2_book", exchange, [symbol], end=math.nextafter(end, math.inf), keep_seen=True)
        return table.set_column(table.schema.get_field_index("receipt_timestamp"), "receipt_timestamp", table["_seen"])

    def book(self, exchange: str, symbol: str, at: Time, depth: int | None = None) -> dict[str, Any]:
        """{"exchange", "symbol", "at", "bids", "asks"}: the book after every l2_book event of the
        symbol received at or before `at`; bids descending, asks ascending."""
        if depth is not None and depth < 1:
            raise LakeError(f"--depth must be at least 1, got {depth}")
        t = parse_time(at, "--at")
        try:
            table = self.book_rows(exchange, symbol, t, t)
            bids, asks = book_at(table, t, depth)
        except BookError as err:
            raise LakeError(f"no {exchange} {symbol} book at {_iso(t)}: {err}") from None
        except LakeError as err:
            if "received" in str(err):
                raise LakeError(
                    f"no {exchange} {symbol} book at {_iso(t)}: it is before the first l2_book event"
                ) from None
            raise
        return {"exchange": exchange, "symbol": symbol, "at": at, "bids": bids, "asks": asks}

    def snapshots(
        self,
        exchange: str,
        symbol: str,
        depth: int,
        interval: str | float,
        start: Time | None = None,
        end: Time | None = None,
    ) -> pa.Table:
        """The book every `interval` ("100ms", "1s", or seconds), `depth` levels per side, as
        timestamp, bid_price_0.., bid_size_0.., ask_price_0.., ask_size_0.. (NaN where shorter)."""
        if depth < 1:
            raise LakeError(f"--depth must be at least 1, got {depth}")
        step = parse_interval(interval) if isinstance(interval, str) else float(interval)
        t0 = None if start is None else parse_time(start, "--start")
        span = self.time_span("l2_book", exchange, [symbol])
        assert span is not None  # _blocks raised for a selection without blocks
        t1 = span[1] if end is None else parse_time(end, "--end")
        if t0 is not None and end is not None and t1 < t0:
            raise LakeError(f"--end {_iso(t1)} is before --start {_iso(t0)}")
        if t1 < span[0] or (t0 is not None and t0 > span[1]):
            raise LakeError(
                f"no {exchange} {symbol} l2_book between {_iso(t0 or span[0])} and {_iso(t1)}: "
                f"it holds them from {_iso(span[0])} to {_iso(span[1])}"
            )
        table = self.book_rows(exchange, symbol, t0, t1)
        return snapshots(table, depth, step, t0, t1)
