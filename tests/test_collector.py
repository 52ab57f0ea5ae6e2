"""The collector's callbacks, fed real cryptofeed objects, writing to a real Redis."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import redis
from cryptofeed.types import OrderBook, Trade

from svoe.api.channels import FEED_EVENTS
from svoe.api.contract import PAYLOAD_FIELD, stream_key
from svoe.api.load import parse_manifest
from svoe.feedpod.collector import Collector
from svoe.feedpod.events import FEED_SYMBOL, decode
from svoe.feedpod.redis_buffer import StreamWriter, connect, split_entry
from tests.conftest import RedisProc


def _feed(lake: Path) -> Any:
    spec = {
        "exchange": "BINANCE",
        "channels": ["trades", "l2_book"],
        "symbols": ["BTC-USDT"],
        "book": {"snapshotInterval": 2},
        "storage": {"lake": str(lake)},
    }
    return parse_manifest(
        {"apiVersion": "svoe.io/v1alpha1", "kind": "DataFeed", "metadata": {"name": "c"}, "spec": spec}
    )


def _book(symbol: str, seq: int, delta: dict[str, Any] | None) -> OrderBook:
    book = OrderBook("BINANCE", symbol, bids={Decimal("1"): Decimal("2")}, asks={Decimal("3"): Decimal("4")})
    book.timestamp, book.sequence_number, book.delta = 1.0, seq, delta
    return book


def _stream(url: str, key: str) -> list[bytes]:
    r = redis.Redis.from_url(url)
    return [p for i, f in r.xrange(key) for _, p in split_entry(i, f[PAYLOAD_FIELD])]


def test_only_the_feeds_symbols_are_buffered_and_a_second_snapshot_is_a_resync(
    redis_proc: RedisProc, tmp_path: Path
) -> None:
    feed = _feed(tmp_path / "lake")
    delta = {"bid": [(Decimal("1"), Decimal("5"))], "ask": []}

    async def run() -> Collector:
        writer = StreamWriter(connect(redis_proc.url), "BINANCE")
        await writer.start([])
        collector = Collector(feed, writer)
        cbs = collector.callbacks()
        for symbol in ("BTC-USDT", "ETH-USDT"):  # ETH-USDT: sent by the exchange, not asked for
            await cbs["trades"](Trade("BINANCE", symbol, "buy", Decimal("1"), Decimal("2"), 1.0, id="7"), 2.0)
            await cbs["l2_book"](_book(symbol, 1, None), 2.0)
            await cbs["l2_book"](_book(symbol, 2, delta), 2.0)
            await cbs["l2_book"](_book(symbol, 3, delta), 2.0)
            await cbs["l2_book"](_book(symbol, 4, None), 2.0)
        await writer.close()
        return collector

    collector = asyncio.run(run())
    assert collector.unsubscribed == 5 and collector.events == 5
    trades = _stream(redis_proc.url, stream_key("BINANCE", "trades", "BTC-USDT"))
    assert [decode("trades", t)["id"] for t in trades] == ["7"]
    books = [decode("l2_book", b) for b in _stream(redis_proc.url, stream_key("BINANCE", "l2_book", "BTC-USDT"))]
    # Updates 2 and 4 are stored whole (snapshotInterval 2), besides the exchange's snapshot (1).
    assert [(b["sequence_number"], b["snapshot"]) for b in books] == [(1, 1), (2, 1), (3, 0), (4, 1)]
    assert books[2]["bids"] == [["1", "5"]]
    r = redis.Redis.from_url(redis_proc.url)
    assert not [k for k in r.keys("*ETH-USDT*")]
    kinds = [orjson.loads(e)[2] for e in _stream(redis_proc.url, stream_key("BINANCE", FEED_EVENTS, FEED_SYMBOL))]
    assert kinds == ["resync"]  # the second snapshot of BTC-USDT; ETH-USDT's are not the feed's
