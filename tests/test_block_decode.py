"""The vectorised block decoder against a plain per-event reference, on events made by the
collector's own encoders: every channel, nulls, odd strings, decimal notations, empty book sides."""

from __future__ import annotations

import random
from decimal import Decimal as D
from types import SimpleNamespace
from typing import Any

import orjson
import pyarrow as pa
import pytest
from cryptofeed.types import Candle, OrderBook, Ticker, Trade

from svoe.feedpod.block_decode import to_table
from svoe.feedpod.events import CHANNEL_FIELDS, SIMPLE_ENCODERS, encode_book, encode_feed_event
from svoe.lake.schema import CHANNEL_SCHEMAS, SVOE_COLUMNS


def decoded_schema(channel: str) -> pa.Schema:
    """The channel's lake columns that come from the event itself."""
    return pa.schema([f for f in CHANNEL_SCHEMAS[channel] if f.name not in SVOE_COLUMNS])


def decode_block(channel: str, payloads: list[bytes]) -> pa.Table:
    """The columns of a block that come from its events, as the block writer decodes them."""
    ids = [f"1796256000000-{i}" for i in range(len(payloads))]
    return to_table(channel, ids, payloads, "w").select(decoded_schema(channel).names)


def _reference(channel: str, payloads: list[bytes]) -> pa.Table:
    """One event at a time, in Python: what each lake column must hold."""
    schema = decoded_schema(channel)
    fields = CHANNEL_FIELDS[channel]
    rows = []
    for p in payloads:
        event = dict(zip(fields, orjson.loads(p), strict=True))
        row: dict[str, Any] = {}
        for f in schema:
            if f.name in event:
                v = event[f.name]
                if v is None:
                    row[f.name] = None
                elif f.type == pa.float64():
                    row[f.name] = float(str(v))
                elif f.type == pa.string():
                    row[f.name] = str(v)
                elif f.type == pa.bool_():
                    row[f.name] = bool(v)
                else:
                    row[f.name] = int(v)
            else:
                side, _, part = f.name.partition("_")
                parts = ("price", "size") if channel == "l2_book" else ("order_id", "price", "size")
                levels = event["bids" if side == "bid" else "asks"]
                convert = str if part == "order_id" else lambda v: float(str(v))
                row[f.name] = [convert(level[parts.index(part)]) for level in levels]
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema)


def _levels(rng: random.Random, n: int) -> dict[D, D]:
    return {D(f"{rng.uniform(0.0001, 70000):.{rng.randint(0, 8)}f}"): D(f"{rng.uniform(0, 5):.6f}") for _ in range(n)}


def _books(l3: bool) -> list[bytes]:
    rng = random.Random(7)
    out = []
    for i in range(300):
        if l3:
            bids = {D(str(100 - k)): {f'o{k}"x': D("0.5"), f"o{k}b": D("1E-8")} for k in range(rng.randint(0, 3))}
            asks = {D(str(101 + k)): {str(k): D("2")} for k in range(rng.randint(0, 3))}
        else:
            bids, asks = _levels(rng, rng.randint(0, 30)), _levels(rng, rng.randint(0, 30))
        book = OrderBook("X", "BTC-USDT", bids=bids, asks=asks)
        book.timestamp = None if i % 7 == 0 else 1633998511.0 + i / 1000
        book.sequence_number = None if i % 11 == 0 else 10**12 + i
        book.delta = None if i % 5 == 0 or l3 else {"bid": list(bids.items())[:3], "ask": []}
        out.append(encode_book(book, 1633998512.25 + i, full=i % 13 == 0, depth=i % 3 * 10, l3=l3))
    return out


def _simple(channel: str) -> list[bytes]:
    odd = ["plain", 'quo"te', "new\nline", "ünï", None, ""]
    values = [D("61234.56"), D("1E-8"), D("0.000000012345"), 7, 1.25, None]
    out = []
    for i in range(len(odd) * len(values)):
        s, v = odd[i % len(odd)], values[i // len(odd)]
        obj: Any
        if channel == "trades":
            obj = Trade("X", "BTC-USDT", "buy", D("0.1"), v or D("1"), 1.5, id=s, type=s)
        elif channel == "ticker":
            obj = Ticker("X", "BTC-USDT", v, D("1.6"), None if i % 2 else 1.5)
        elif channel == "candles":
            obj = Candle(
                "X", "BTC-USDT", 1.0, 60.0, "1m", i, D("1"), v or D("2"), D("3"), D("0.5"), D("100"), i % 2 == 0, 61.0
            )
        elif channel == "funding":
            obj = SimpleNamespace(
                timestamp=1.0, mark_price=v, rate=D("-0.0001"), next_funding_time=None, predicted_rate=v
            )
        elif channel == "open_interest":
            obj = SimpleNamespace(timestamp=None, open_interest=v)
        else:
            obj = SimpleNamespace(timestamp=2.0, side=s, quantity=v, price=D("5"), id=s, status=s)
        out.append(SIMPLE_ENCODERS[channel](obj, 1633998512.5 + i))
    return out


@pytest.mark.parametrize("channel", sorted(SIMPLE_ENCODERS))
def test_simple_channels_decode_as_the_reference(channel: str) -> None:
    payloads = _simple(channel)
    assert decode_block(channel, payloads).equals(_reference(channel, payloads))


@pytest.mark.parametrize("l3", [False, True], ids=["l2_book", "l3_book"])
def test_books_decode_as_the_reference(l3: bool) -> None:
    channel = "l3_book" if l3 else "l2_book"
    payloads = _books(l3)
    assert decode_block(channel, payloads).equals(_reference(channel, payloads))


def test_feed_events_decode_as_the_reference() -> None:
    payloads = [
        encode_feed_event("gap", 1.5, "l2_book", "BTC-USDT", {"seq_before": 4, "message": 'x"\n'}),
        encode_feed_event("start", 2.5, None, None, {"pid": 1, "streams": [["trades", "A"]]}),
    ]
    assert decode_block("feed_events", payloads).equals(_reference("feed_events", payloads))


def test_ids_and_writer_become_the_svoe_columns() -> None:
    payloads = [encode_feed_event("start", 1.0, None, None, {}), encode_feed_event("stop", 2.0, None, None, {})]
    ids = ["1796256000123-7", "1796256000123-2147483647"]
    table = to_table("feed_events", ids, payloads, "o'neil-1")
    assert table.select(["svoe_id", "svoe_ms", "svoe_seq", "svoe_writer", "svoe_origin"]).to_pylist() == [
        {"svoe_id": i, "svoe_ms": 1796256000123, "svoe_seq": int(i.split("-")[1]), "svoe_writer": "o'neil-1",
         "svoe_origin": None}
        for i in ids
    ]  # fmt: skip
