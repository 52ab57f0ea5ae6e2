"""The collector: a cryptofeed 3.0.1 feed built from a DataFeed spec, whose callbacks append every
normalized event to the Redis stream buffer.

Runs as the pod's `collector` container and as a process of `svoe run`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from svoe.api import DataFeed
from svoe.feedpod import metrics
from svoe.feedpod.endpoints import redirected_feed_class
from svoe.feedpod.events import SIMPLE_ENCODERS, encode_book
from svoe.feedpod.redis_buffer import StreamWriter, stream_key

LOG = logging.getLogger(__name__)

Callback = Callable[[Any, float], Awaitable[None]]

# Exceptions that are cryptofeed's own way to ask for a resync by reconnecting: they must keep
# propagating. Anything else raised while handling one message means that message was malformed.
_RESYNC_EXCEPTIONS: tuple[type[BaseException], ...] = ()


def _resync_exceptions() -> tuple[type[BaseException], ...]:
    global _RESYNC_EXCEPTIONS
    if not _RESYNC_EXCEPTIONS:
        from cryptofeed.exceptions import BadChecksum, BidAskOverlapping, MissingSequenceNumber

        _RESYNC_EXCEPTIONS = (MissingSequenceNumber, BadChecksum, BidAskOverlapping)
    return _RESYNC_EXCEPTIONS


class _CryptofeedLogWatcher(logging.Handler):
    """cryptofeed reports some problems only as warnings: a book gap before it drops and refetches
    the book, and a message it does not understand before it skips it."""

    def __init__(self, exchange: str) -> None:
        super().__init__(logging.WARNING)
        self.exchange = exchange

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "missing book update" in msg or ("sequence" in msg.lower() and "gap" in msg.lower()):
            # "EXCHANGE: SYMBOL missing book update detected, resetting book"
            parts = msg.split(":", 1)[1].split() if ":" in msg else []
            metrics.SEQUENCE_GAPS.labels(self.exchange, parts[0] if parts else "unknown").inc()
        elif "Unexpected message" in msg or "unknown message" in msg.lower():
            metrics.MALFORMED.labels(self.exchange).inc()


class Collector:
    def __init__(self, feed: DataFeed, writer: StreamWriter) -> None:
        self.feed = feed
        self.spec = feed.spec
        self.writer = writer
        self.exchange = feed.spec.exchange
        self.feed_obj: Any = None
        self._book_events: dict[tuple[str, str], int] = {}
        self._snapshots: dict[tuple[str, str], int] = {}
        # Only the feed's own streams: an exchange (or a replay) may send symbols nobody asked for,
        # and their entries would sit in Redis forever, since no aggregator reads those streams.
        self._keys: dict[tuple[str, str], str] = {
            (ch, sym): stream_key(self.exchange, ch, sym) for ch, sym in feed.streams()
        }
        self.unsubscribed = 0
        self.events = 0
        self.messages = 0  # exchange messages handled, parsed or not

    # ---- callbacks -------------------------------------------------------------------------
    def _key(self, channel: str, symbol: str) -> str | None:
        key = self._keys.get((channel, symbol))
        if key is None:
            self.unsubscribed += 1
            metrics.UNSUBSCRIBED.labels(self.exchange).inc()
        return key

    def _simple_callback(self, channel: str) -> Callback:
        encode = SIMPLE_ENCODERS[channel]
        append = self.writer.append
        key_of = self._key

        async def cb(obj: Any, receipt_ts: float) -> None:
            key = key_of(channel, obj.symbol)
            if key is None:
                return
            self.events += 1
            await append(key, channel, encode(obj, receipt_ts))

        return cb

    def _book_callback(self, channel: str) -> Callback:
        exchange = self.exchange
        append = self.writer.append
        key_of = self._key
        depth = self.spec.book.depth
        every = self.spec.book.snapshot_interval
        l3 = channel == "l3_book"

        async def cb(book: Any, receipt_ts: float) -> None:
            symbol = book.symbol
            key = key_of(channel, symbol)
            if key is None:
                return
            self.events += 1
            full = False
            if every:
                k = (channel, symbol)
                n = self._book_events[k] = self._book_events.get(k, 0) + 1
                full = n % every == 0
            if book.delta is None:
                k = (channel, symbol)
                seen = self._snapshots.get(k, 0)
                if seen:
                    metrics.BOOK_RESYNCS.labels(exchange, symbol).inc()
                self._snapshots[k] = seen + 1
            await append(key, channel, encode_book(book, receipt_ts, full, depth, l3))

        return cb

    @property
    def connected(self) -> bool:
        """Whether any websocket connection to the exchange is open right now."""
        from cryptofeed.connection import WSAsyncConn

        handlers = getattr(self.feed_obj, "connection_handlers", None) or []
        return any(h.conn.is_open for h in handlers if isinstance(h.conn, WSAsyncConn))

    def callbacks(self) -> dict[str, Callback]:
        out: dict[str, Callback] = {}
        for ch in self.spec.channels:
            out[ch] = self._book_callback(ch) if ch in ("l2_book", "l3_book") else self._simple_callback(ch)
        return out

    # ---- feed ------------------------------------------------------------------------------
    def build_feed(self) -> Any:
        ep = self.spec.endpoints
        base = redirected_feed_class(self.exchange, ep.websocket, ep.rest, ep.ca_file)
        collector = self

        class GuardedFeed(base):  # type: ignore[valid-type,misc]
            """Counts and skips malformed messages instead of letting one kill the connection."""

            def connect(self) -> list[tuple[Any, Any, Any]]:
                return [(conn, sub, collector._guard(handler)) for conn, sub, handler in super().connect()]

        kwargs: dict[str, Any] = {
            "symbols": list(self.spec.symbols),
            "channels": list(self.spec.channels),
            "callbacks": self.callbacks(),
            "checksum_validation": False,
            "max_depth": self.spec.book.depth,
            "log_message_on_error": True,
        }
        if "candles" in self.spec.channels:
            kwargs["candle_interval"] = self.spec.candle_interval
            kwargs["candle_closed_only"] = self.spec.candle_closed_only
        self.feed_obj = GuardedFeed(**kwargs)
        return self.feed_obj

    def _guard(self, handler: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        exchange = self.exchange
        resync = _resync_exceptions()

        async def guarded(msg: Any, conn: Any, ts: float) -> None:
            self.messages += 1
            try:
                await handler(msg, conn, ts)
            except resync as err:
                metrics.SEQUENCE_GAPS.labels(exchange, getattr(err, "symbol", "unknown")).inc()
                raise
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.MALFORMED.labels(exchange).inc()
                LOG.warning("%s: skipped a message that failed to parse: %.300r", exchange, msg, exc_info=True)

        return guarded


def feed_config(log_file: str) -> dict[str, Any]:
    return {"log": {"filename": log_file, "level": "WARNING"}, "uvloop": False}


async def run_collector(
    feed: DataFeed,
    redis_url: str,
    stop: asyncio.Event,
    log_file: str = "feedhandler.log",
    on_ready: Callable[[Collector], None] | None = None,
) -> Collector:
    """Collect until `stop` is set; then write every buffered event to Redis and return."""
    from svoe.feedpod import redis_buffer

    client = redis_buffer.connect(redis_url)
    writer = StreamWriter(client, feed.spec.exchange)
    await writer.start(stream_key(feed.spec.exchange, c, s) for c, s in feed.streams())
    collector = Collector(feed, writer)
    logging.getLogger("cryptofeed").addHandler(_CryptofeedLogWatcher(feed.spec.exchange))
    cf = collector.build_feed()
    gc.freeze()  # start-up objects leave the GC's generations: shorter pauses on the hot path
    if on_ready is not None:
        on_ready(collector)
    feed_stop = asyncio.Event()
    task = asyncio.create_task(cf.run(feed_stop), name="svoe.feed")
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    failure: BaseException | None = None
    if task.done() and not stop.is_set():
        failure = task.exception() or RuntimeError("the feed stopped by itself")
    feed_stop.set()
    try:
        await asyncio.wait_for(task, timeout=15)
    except Exception:
        if failure is None:
            LOG.warning("feed shutdown raised", exc_info=True)
    stopper.cancel()
    metrics.FEED_CONNECTED.labels(feed.spec.exchange).set(0)
    # Whatever was collected before a failure is still written to Redis first.
    await writer.close()
    await client.aclose()
    if failure is not None:
        raise failure
    return collector


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def summary(collector: Collector, started: float) -> str:
    took = time.monotonic() - started
    return json.dumps({"events": collector.events, "seconds": round(took, 3)})
