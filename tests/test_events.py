"""Encoding cryptofeed objects for the buffer and decoding blocks into the lake schema."""

from __future__ import annotations

from decimal import Decimal as D

import pyarrow as pa
from cryptofeed.types import Candle, OrderBook, Ticker, Trade

from svoe.feedpod.block_decode import to_table
from svoe.feedpod.events import SIMPLE_ENCODERS, decode, encode_book
from svoe.lake.schema import CHANNEL_SCHEMAS


def test_trade_roundtrip_keeps_values() -> None:
    t = Trade("BINANCE", "BTC-USDT", "buy", D("0.00012345"), D("61234.56"), 1633998511.5, id="77", type=None)
    payload = SIMPLE_ENCODERS["trades"](t, 1633998511.7)
    assert decode("trades", payload)["price"] == "61234.56"  # exact decimal in the buffer
    table = to_table("trades", ["1-0"], [payload], "w")
    assert table.schema == CHANNEL_SCHEMAS["trades"]
    row = table.to_pylist()[0]
    assert row["price"] == 61234.56 and row["amount"] == 0.00012345 and row["id"] == "77" and row["type"] is None


def test_ticker_and_candle() -> None:
    tk = Ticker("BINANCE", "BTC-USDT", D("1.5"), D("1.6"), None)
    c = Candle("BINANCE", "BTC-USDT", 1.0, 60.0, "1m", 12, D("1"), D("2"), D("3"), D("0.5"), D("100"), True, 61.0)
    t1 = to_table("ticker", ["1-0"], [SIMPLE_ENCODERS["ticker"](tk, 2.0)], "w")
    t2 = to_table("candles", ["1-0"], [SIMPLE_ENCODERS["candles"](c, 62.0)], "w")
    assert t1.to_pylist()[0]["timestamp"] is None and t1.to_pylist()[0]["ask"] == 1.6
    assert t2.to_pylist()[0]["trades"] == 12 and t2.to_pylist()[0]["closed"] is True


def test_book_delta_and_snapshot_rows() -> None:
    book = OrderBook("BINANCE", "BTC-USDT", bids={D("10"): D("1"), D("9"): D("2")}, asks={D("11"): D("3")})
    book.timestamp, book.sequence_number, book.delta = 5.0, 42, None
    snap = encode_book(book, 6.0, full=False, depth=0, l3=False)
    book.delta = {"bid": [(D("10"), D("0"))], "ask": []}
    delta = encode_book(book, 7.0, full=False, depth=0, l3=False)
    full = encode_book(book, 8.0, full=True, depth=1, l3=False)
    rows = to_table("l2_book", ["1-0", "1-1", "1-2"], [snap, delta, full], "w").to_pylist()
    assert rows[0]["snapshot"] and rows[0]["bid_price"] == [10.0, 9.0] and rows[0]["ask_size"] == [3.0]
    assert not rows[1]["snapshot"] and rows[1]["bid_price"] == [10.0] and rows[1]["bid_size"] == [0.0]
    assert rows[2]["snapshot"] and rows[2]["bid_price"] == [10.0]  # depth 1
    assert pa.Table.from_pylist(rows, schema=CHANNEL_SCHEMAS["l2_book"]).num_rows == 3
