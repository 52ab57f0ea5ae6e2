"""The replay exchange: an unmodified cryptofeed 3.0.1 client, redirected to it, reproduces the
reference counts of ../shared/captures/README.md for every captured exchange; looping keeps a
Binance book consistent; pacing, reconnects and REST matching behave as documented."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import websockets
from cryptofeed import FeedHandler
from cryptofeed.connection import WSAsyncConn
from cryptofeed.exchanges import EXCHANGE_MAP
from cryptofeed.symbols import Symbols

from svoe.exchanges.endpoints import rebase_url, redirected_feed_class
from svoe.replay import (
    REFERENCE_FEED_OPTIONS,
    LoopNotSupported,
    ReplayServer,
    capture_subscription,
    list_capture_exchanges,
    load_capture,
    reference_counts,
    replay_feed,
)
from svoe.replay.capture import RestIndex, _translate_symbol

CAPTURE_DIR = Path(os.environ.get("SVOE_CAPTURES", Path(__file__).parents[1] / ".." / "shared" / "captures")).resolve()


def _exchanges() -> list[str]:
    return list_capture_exchanges(CAPTURE_DIR) if CAPTURE_DIR.is_dir() else []


@pytest.fixture(scope="module")
def capture_dir() -> Path:
    if not (CAPTURE_DIR / "README.md").is_file():
        pytest.fail(f"capture directory missing at {CAPTURE_DIR}; set SVOE_CAPTURES to ../shared/captures")
    return CAPTURE_DIR


@pytest.fixture(scope="module")
def cryptofeed_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """cryptofeed's log file in a temp dir; its logger configured by our FeedHandler, not an earlier test."""
    path = tmp_path_factory.mktemp("cryptofeed-log") / "feedhandler.log"
    logger = logging.getLogger("cryptofeed")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers = []
    yield path
    for handler in logger.handlers:
        handler.close()
    logger.handlers, logger.level, logger.propagate = saved


@pytest.fixture(autouse=True)
def symbol_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path_factory.getbasetemp() / "replay-xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


class WarningLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _received(feed: Any) -> int:
    return sum(h.conn.stats.received for h in feed.connection_handlers if isinstance(h.conn, WSAsyncConn))


async def _replay_once(capture_dir: Path, exchange: str, log_file: Path) -> tuple[Counter[str], ReplayServer, Any]:
    counts: Counter[str] = Counter()

    def counter(channel: str) -> Any:
        async def count(obj: Any, receipt_timestamp: float) -> None:
            counts[channel] += 1

        return count

    subscription = capture_subscription(capture_dir, exchange)
    Symbols.data.pop(exchange, None)  # symbol lists must come from the replay, not an earlier test
    server = ReplayServer(capture_dir, exchange)
    await server.start()
    try:
        feed_cls: Any = redirected_feed_class(exchange, server.ws_base, server.rest_base, server.ca_file)
        feed = feed_cls(
            subscription=subscription,
            callbacks={channel: counter(channel) for channel in subscription},
            **REFERENCE_FEED_OPTIONS,
        )
        handler: Any = cast(Any, FeedHandler)(
            config={"log": {"filename": str(log_file), "level": "WARNING"}, "uvloop": False}
        )
        handler.add_feed(feed)
        task = asyncio.create_task(handler.run_async(install_signal_handlers=False))
        deadline = time.monotonic() + 45
        stable_since, last = time.monotonic(), -1
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            assert not task.done(), f"{exchange}: the feed handler ended early: {task.exception()!r}"
            total = sum(counts.values())
            if total != last:
                stable_since, last = time.monotonic(), total
            if server.exhausted.is_set() and _received(feed) >= server.sent and time.monotonic() - stable_since > 0.5:
                break
        else:
            pytest.fail(f"{exchange}: not done in time: sent {server.sent}/{server.total_messages}, got {dict(counts)}")
        handler.request_stop()
        await asyncio.wait_for(task, 30)
        return counts, server, feed
    finally:
        await server.stop()


@pytest.mark.parametrize("exchange", _exchanges())
def test_replay_reproduces_reference_counts(capture_dir: Path, cryptofeed_log: Path, exchange: str) -> None:
    expected = reference_counts(capture_dir)[exchange]
    counts, server, feed = asyncio.run(_replay_once(capture_dir, exchange, cryptofeed_log))

    assert dict(counts) == expected, f"{exchange}: callbacks {dict(counts)} != reference {expected}"
    assert server.sent == server.total_messages, "every captured message is sent exactly once"
    assert _received(feed) == server.sent
    assert server.rest_missing == 0, "every REST request the client made was answered from the capture"
    errors = [line for line in cryptofeed_log.read_text().splitlines() if " : ERROR : " in line and exchange in line]
    assert not errors, f"cryptofeed logged errors: {errors[:3]}"


def test_every_captured_exchange_has_reference_counts(capture_dir: Path) -> None:
    exchanges = list_capture_exchanges(capture_dir)
    assert exchanges, "no EX.ws.N.0 files found"
    assert sorted(reference_counts(capture_dir)) == exchanges


def test_binance_loop_keeps_the_book_consistent(capture_dir: Path, cryptofeed_log: Path) -> None:
    one_pass = reference_counts(capture_dir)["BINANCE"]["l2_book"]
    book_symbols = capture_subscription(capture_dir, "BINANCE")["l2_book"]
    snapshots: Counter[str] = Counter()
    last_seq: dict[str, int] = {}
    out_of_order: list[tuple[str, int, int]] = []

    async def check_book(book: Any, receipt_timestamp: float) -> None:
        if book.delta is None:
            snapshots[book.symbol] += 1
        elif book.sequence_number <= last_seq.get(book.symbol, -1):
            out_of_order.append((book.symbol, last_seq[book.symbol], book.sequence_number))
        last_seq[book.symbol] = book.sequence_number

    warnings = WarningLog()
    logger = logging.getLogger("cryptofeed")
    logger.addHandler(warnings)
    try:
        run = asyncio.run(
            replay_feed(
                capture_dir,
                "BINANCE",
                subscription={"l2_book": book_symbols},
                callbacks={"l2_book": [check_book]},
                loop=True,
                seconds=3.0,
                feed_kwargs={"exceptions": [Exception]},  # any handler exception fails the run
            )
        )
    finally:
        logger.removeHandler(warnings)

    assert run.loops_completed >= 2
    assert run.counts["l2_book"] > 2 * one_pass
    assert dict(snapshots) == dict.fromkeys(book_symbols, 1), "one snapshot per book: no resync"
    assert not out_of_order, out_of_order[:5]
    assert not [r.getMessage() for r in warnings.records if r.name.startswith("cryptofeed")]


def test_loop_is_refused_where_sequences_cannot_be_continued(capture_dir: Path) -> None:
    with pytest.raises(LoopNotSupported, match="KRAKEN_FUTURES"):
        ReplayServer(capture_dir, "KRAKEN_FUTURES", loop=True)


async def _raw_client(server: ReplayServer, path: str, limit: int | None = None) -> tuple[list[str], float, bool]:
    """A bare websocket client; returns the messages, seconds until the last one, whether still open."""
    ctx = ssl.create_default_context(cafile=server.ca_file)
    got: list[str] = []
    started = last = time.monotonic()
    async with websockets.connect(server.ws_base + path, ssl=ctx, max_size=None) as ws:
        while limit is None or len(got) < limit:
            try:
                got.append(str(await asyncio.wait_for(ws.recv(), 0.5 if server.exhausted.is_set() else 5)))
            except TimeoutError:
                break
            last = time.monotonic()
        still_open = ws.state is websockets.protocol.State.OPEN
    return got, last - started, still_open


def test_speed_paces_and_exhausted_socket_stays_open(capture_dir: Path) -> None:
    capture = load_capture(capture_dir, "BINANCE")
    stream = capture.streams[0]
    duration = stream.messages[-1].timestamp - stream.messages[0].timestamp
    speed = 40.0

    async def go() -> tuple[list[str], float, bool]:
        async with ReplayServer(capture_dir, "BINANCE", speed=speed, settle=0.0) as server:
            return await _raw_client(server, "/stream")

    got, elapsed, still_open = asyncio.run(go())
    assert got == [m.data for m in stream.messages]
    assert elapsed >= 0.8 * duration / speed, f"{elapsed:.2f}s for {duration:.1f}s of capture at {speed}x"
    assert still_open, "an exhausted connection stays open instead of making the client reconnect"


def test_reconnect_resumes_without_repeating(capture_dir: Path) -> None:
    capture = load_capture(capture_dir, "BINANCE")
    recorded = [m.data for m in capture.streams[0].messages]

    async def go() -> tuple[list[str], list[str]]:
        # paced, so that the first client leaves mid-stream rather than after everything was sent
        async with ReplayServer(capture_dir, "BINANCE", speed=20.0, settle=0.0) as server:
            first, _, _ = await _raw_client(server, "/stream", limit=100)
            await asyncio.sleep(0.2)  # the server notices the close and releases the stream
            rest, _, _ = await _raw_client(server, "/stream")
            return first, rest

    first, rest = asyncio.run(go())
    assert len(first) == 100
    # messages in flight when the first client left are lost, never repeated
    assert first + rest == recorded[: len(first)] + recorded[len(recorded) - len(rest) :]
    assert len(first) + len(rest) <= len(recorded)
    assert rest[-1] == recorded[-1]


def test_rest_matching(capture_dir: Path) -> None:
    async def go() -> dict[str, tuple[int, str]]:
        out: dict[str, tuple[int, str]] = {}
        async with ReplayServer(capture_dir, "BINANCE") as server:
            connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=server.ca_file))
            async with aiohttp.ClientSession(connector=connector) as session:
                for path in ("/api/v3/depth?symbol=NKNUSDT&limit=5000", "/api/v3/depth?symbol=NOPE", "/nope"):
                    async with session.get(server.rest_base + path) as resp:
                        out[path] = (resp.status, await resp.text())
        return out

    answers = asyncio.run(go())
    recorded = next(a for a in load_capture(capture_dir, "BINANCE").runtime if "NKNUSDT" in a.url)
    assert answers["/api/v3/depth?symbol=NKNUSDT&limit=5000"] == (200, recorded.body)
    assert answers["/api/v3/depth?symbol=NOPE"][0] == 404
    assert answers["/nope"][0] == 404


def test_rest_index_quirks(capture_dir: Path) -> None:
    deribit = RestIndex(load_capture(capture_dir, "DERIBIT").startup)
    answer = deribit.lookup("/api/v2/public/get_instruments", [("currency", "ETH")])
    assert answer is not None and ("currency", "ETH") in answer.query and ("expired", "false") in answer.query

    from svoe.replay.capture import PATH_ALIASES

    bitfinex = RestIndex(load_capture(capture_dir, "BITFINEX").startup, PATH_ALIASES["BITFINEX"])
    futures = bitfinex.lookup("/v2/conf/pub:list:pair:futures")
    assert futures is not None and futures.path == "/v2/conf/pub:list:pair:future"


def test_capture_subscription_uses_cryptofeed3_names(capture_dir: Path) -> None:
    sub = capture_subscription(capture_dir, "DERIBIT")
    capture = load_capture(capture_dir, "DERIBIT")
    assert set(sub) == set(capture.configuration)
    assert all(len(symbols) == len(capture.configuration[ch]) for ch, symbols in sub.items())
    # the 2021 option names need a translation when cryptofeed 3 names carry a quote currency
    known = {"BTC-USD-8000-21U24-put": "BTC-24SEP21-8000-P", "BTC-USD-9000-21U24-put": "x"}
    assert _translate_symbol("BTC-8000-21U24-put", known) == "BTC-USD-8000-21U24-put"
    assert _translate_symbol("BTC-7000-21U24-put", known) is None


def test_redirected_feed_class() -> None:
    original = EXCHANGE_MAP["BINANCE"]
    assert redirected_feed_class("BINANCE", None, None, None) is original
    moved = redirected_feed_class("BINANCE", "wss://127.0.0.1:9", "https://127.0.0.1:9", None)
    assert issubclass(moved, original) and moved.id == original.id
    assert moved.websocket_endpoints[0].address == "wss://127.0.0.1:9"
    assert moved.rest_endpoints[0].route("instruments") == "https://127.0.0.1:9/api/v3/exchangeInfo"
    assert original.websocket_endpoints[0].address == "wss://stream.binance.com:9443", "the original is untouched"
    assert rebase_url("wss://ws.phemex.com", "wss://h:1") == "wss://h:1"
    assert rebase_url("https://a.b/x?y=1", "https://h:1/mirror/") == "https://h:1/mirror/x?y=1"
    with pytest.raises(ValueError, match="unknown exchange"):
        redirected_feed_class("NOPE", "wss://h:1", None, None)


def test_reference_counts_table_parsed(capture_dir: Path) -> None:
    counts = reference_counts(capture_dir)
    readme = (capture_dir / "README.md").read_text()
    for exchange, channels in counts.items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| {exchange} |"))
        assert sorted(int(c) for c in row.strip("|").split("|")[1:] if c.strip()) == sorted(channels.values())
    assert json.dumps(counts)  # plain data
