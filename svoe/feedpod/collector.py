"""The collector: a cryptofeed 3.0.1 feed built from a DataFeed spec, whose callbacks append every
normalized event to the Redis stream buffer.

Runs as the pod's `collector` container and as a process of `svoe run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from svoe.api import DataFeed
from svoe.api.channels import CHANNELS
from svoe.api.contract import stream_key
from svoe.exchanges.endpoints import redirected_feed_class
from svoe.feedpod import metrics
from svoe.feedpod.events import FEED_EVENTS, FEED_SYMBOL, GAP_KINDS, SIMPLE_ENCODERS, encode_book, encode_feed_event
from svoe.feedpod.redis_buffer import StreamWriter, buffer_streams
from svoe.feedpod.stats import GapWindow

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

    def __init__(self, collector: Collector) -> None:
        super().__init__(logging.WARNING)
        self.collector = collector
        self.exchange = collector.exchange

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "missing book update" in msg or ("sequence" in msg.lower() and "gap" in msg.lower()):
            # "EXCHANGE: SYMBOL missing book update detected, resetting book"
            parts = msg.split(":", 1)[1].split() if ":" in msg else []
            symbol = parts[0] if parts else "unknown"
            metrics.SEQUENCE_GAPS.labels(self.exchange, symbol).inc()
            self.collector.book_gap(symbol, msg)
        elif "Unexpected message" in msg or "unknown message" in msg.lower():
            metrics.MALFORMED.labels(self.exchange).inc()
            self.collector.record("malformed", error=msg[:300])


class Collector:
    def __init__(self, feed: DataFeed, writer: StreamWriter) -> None:
        self.feed = feed
        self.spec = feed.spec
        self.writer = writer
        self.exchange = feed.spec.exchange
        self.feed_obj: Any = None
        # Per channel, then per symbol: the callbacks look a symbol up in their channel's dict
        # without building a tuple key per event.
        self._book_events: dict[str, dict[str, int]] = {}
        self._snapshots: dict[str, dict[str, int]] = {}
        # Only the feed's own streams: an exchange (or a replay) may send symbols nobody asked for,
        # and their entries would sit in Redis forever, since no aggregator reads those streams.
        self._keys: dict[str, dict[str, str]] = {}
        for ch, sym in feed.streams():
            self._keys.setdefault(ch, {})[sym] = stream_key(self.exchange, ch, sym)
        self.unsubscribed = 0
        self._events_key = stream_key(self.exchange, FEED_EVENTS, FEED_SYMBOL)
        self._last_seq: dict[str, Any] = {}  # symbol -> sequence number of its last book event
        self.stopping = False
        self.events = 0
        self.messages = 0  # exchange messages handled, parsed or not
        self.gaps = GapWindow()  # gap-like feed events of the last hour, for /stats

    # ---- the feed's own events ---------------------------------------------------------------
    def record(self, kind: str, channel: str | None = None, symbol: str | None = None, **detail: Any) -> None:
        """A feed event (events.py FEED_EVENT_KINDS) into the buffer, in order with market data."""
        payload = encode_feed_event(kind, time.time(), channel, symbol, detail)
        if kind in GAP_KINDS:
            self.gaps.record(time.monotonic())
        self.writer.append_nowait(self._events_key, FEED_EVENTS, payload)

    def book_gap(self, symbol: str, message: str) -> None:
        # cryptofeed's gap does not name the book: the l2 one when the feed has both.
        books = [c for c in self.spec.channels if CHANNELS[c].is_book]
        book = min(books, key=lambda c: CHANNELS[c].l3, default="l2_book")
        self.record("gap", book, symbol, seq_before=self._last_seq.get(symbol), message=message[:300])

    def _connection_streams(self, conn: Any) -> list[list[str]] | None:
        """The normalized streams a connection carries, or None when they cannot be told."""
        sub = getattr(conn, "subscription", None)
        if not sub or self.feed_obj is None:
            return None
        out: list[list[str]] = []
        try:
            for ch, syms in sub.items():
                std_ch = self.feed_obj.exchange_channel_to_std(ch)
                out.extend([std_ch, self.feed_obj.exchange_symbol_to_std_symbol(sym)] for sym in syms)
        except Exception:  # an exchange whose subscription keys are not plain channel/symbol names
            return None
        return out

    def _watch_connection(self, conn: Any) -> None:
        """Record when the connection opens and when it closes while the feed is meant to run."""
        opened = conn.connect
        collector = self

        @contextlib.asynccontextmanager
        async def connect() -> Any:
            async with opened() as c:
                collector.record("connect", connection=conn.id, streams=collector._connection_streams(conn))
                try:
                    yield c
                finally:
                    if not collector.stopping:
                        collector.record("disconnect", connection=conn.id, streams=collector._connection_streams(conn))

        conn.connect = connect

    # ---- callbacks -------------------------------------------------------------------------
    def _count_unsubscribed(self) -> None:
        self.unsubscribed += 1
        metrics.UNSUBSCRIBED.labels(self.exchange).inc()

    def _simple_callback(self, channel: str) -> Callback:
        encode = SIMPLE_ENCODERS[channel]
        append = self.writer.append
        keys = self._keys.setdefault(channel, {})

        async def cb(obj: Any, receipt_ts: float) -> None:
            key = keys.get(obj.symbol)
            if key is None:
                self._count_unsubscribed()
                return
            self.events += 1
            await append(key, channel, encode(obj, receipt_ts))

        return cb

    def _book_callback(self, channel: str) -> Callback:
        exchange = self.exchange
        append = self.writer.append
        keys = self._keys.setdefault(channel, {})
        book_events = self._book_events.setdefault(channel, {})
        snapshots = self._snapshots.setdefault(channel, {})
        depth = self.spec.book.depth
        every = self.spec.book.snapshot_interval
        l3 = CHANNELS[channel].l3

        async def cb(book: Any, receipt_ts: float) -> None:
            symbol = book.symbol
            key = keys.get(symbol)
            if key is None:
                self._count_unsubscribed()
                return
            self.events += 1
            full = False
            if every:
                n = book_events[symbol] = book_events.get(symbol, 0) + 1
                full = n % every == 0
            if book.delta is None:
                seen = snapshots.get(symbol, 0)
                if seen:
                    metrics.BOOK_RESYNCS.labels(exchange, symbol).inc()
                    self.record("resync", channel, symbol, seq_after=book.sequence_number)
                snapshots[symbol] = seen + 1
            self._last_seq[symbol] = book.sequence_number
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
            out[ch] = self._book_callback(ch) if CHANNELS[ch].is_book else self._simple_callback(ch)
        return out

    # ---- feed ------------------------------------------------------------------------------
    def build_feed(self) -> Any:
        ep = self.spec.endpoints
        base = redirected_feed_class(self.exchange, ep.websocket, ep.rest, ep.ca_file)
        collector = self

        class GuardedFeed(base):  # type: ignore[valid-type,misc]
            """Counts and skips malformed messages instead of letting one kill the connection."""

            def connect(self) -> list[tuple[Any, Any, Any]]:
                out = []
                for conn, sub, handler in super().connect():
                    collector._watch_connection(conn)
                    out.append((conn, sub, collector._guard(handler)))
                return out

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
                symbol = getattr(err, "symbol", "unknown")
                metrics.SEQUENCE_GAPS.labels(exchange, symbol).inc()
                self.book_gap(symbol, str(err))
                raise
            except asyncio.CancelledError:
                raise
            except Exception as err:
                metrics.MALFORMED.labels(exchange).inc()
                self.record("malformed", error=f"{type(err).__name__}: {err}"[:300])
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
    entry_events = min(redis_buffer.MAX_ENTRY_EVENTS, feed.spec.storage.flush_max_rows)
    writer = StreamWriter(client, feed.spec.exchange, max_entry_events=entry_events)
    await writer.start(stream_key(feed.spec.exchange, c, s) for c, s in buffer_streams(feed))
    collector = Collector(feed, writer)
    writer.on_backpressure = lambda on: collector.record("backpressure_on" if on else "backpressure_off")
    collector.record("start", pid=os.getpid(), streams=[list(s) for s in feed.streams()])
    logging.getLogger("cryptofeed").addHandler(_CryptofeedLogWatcher(collector))
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
    collector.stopping = True
    feed_stop.set()
    try:
        await asyncio.wait_for(task, timeout=15)
    except Exception:
        if failure is None:
            LOG.warning("feed shutdown raised", exc_info=True)
    stopper.cancel()
    metrics.FEED_CONNECTED.labels(feed.spec.exchange).set(0)
    collector.record("stop", failed=failure is not None)
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
