"""Process entry points of the feed pod's containers (`svoe collector`, `svoe aggregator`).

`svoe run` starts the very same functions as local processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
import time
from typing import Any

from svoe.api import DataFeed
from svoe.api.contract import collector_key, heartbeat_key, stream_key
from svoe.feedpod import metrics, redis_buffer
from svoe.feedpod.collector import Collector, install_signal_handlers, run_collector
from svoe.feedpod.health import Check, HealthServer, Stats
from svoe.feedpod.redis_buffer import buffer_streams
from svoe.feedpod.stats import RateWindow, read_backlog, stats_document

LOG = logging.getLogger(__name__)

# The aggregator must have reported within this many seconds for the pod to be ready.
HEARTBEAT_STALE_SECONDS = 10.0


def _ready_checks(feed: DataFeed, redis_url: str, state: dict[str, Collector]) -> dict[str, Check]:
    client = redis_buffer.connect(redis_url)
    exchange = feed.spec.exchange

    async def connected() -> tuple[bool, str]:
        c = state.get("collector")
        ok = c is not None and c.connected
        return ok, "exchange connection open" if ok else "no open connection to the exchange"

    async def flushing() -> tuple[bool, str]:
        try:
            hb = await client.hgetall(heartbeat_key(exchange))
        except Exception as err:
            return False, f"cannot read aggregator heartbeat: {err}"
        if not hb:
            return False, "aggregator has not reported yet"
        age = time.time() - float(hb[b"beat"])
        backlog = int(hb.get(b"backlog", 0))
        if age > HEARTBEAT_STALE_SECONDS:
            return False, f"aggregator silent for {age:.0f}s"
        if hb.get(b"flush_ok") == b"0":
            return False, "lake writes are failing (retrying)"
        if backlog > feed.spec.buffer.max_backlog:
            return False, f"backlog {backlog} above bound {feed.spec.buffer.max_backlog}"
        return True, f"backlog {backlog}"

    return {"feed": connected, "redis": _redis_check(client), "flush": flushing}


def _redis_check(client: Any) -> Check:
    async def redis_up() -> tuple[bool, str]:
        try:
            await client.ping()
            return True, "reachable"
        except Exception as err:
            return False, f"unreachable: {err}"

    return redis_up


def _stats_source(feed: DataFeed, redis_url: str, state: dict[str, Collector], rate: RateWindow) -> Stats:
    """/stats of this collector: its writer's counters, the sampled rate and the gap window, and
    the aggregator's backlog from Redis (null when Redis does not answer)."""
    from svoe.lake.layout import writer_identity

    client = redis_buffer.connect(redis_url)
    exchange = feed.spec.exchange
    keys = [stream_key(exchange, c, s) for c, s in buffer_streams(feed)]
    writer, started_at, streams = writer_identity(), time.time(), feed.streams()

    async def stats() -> dict[str, Any]:
        backlog = await read_backlog(client, exchange, keys)
        c = state.get("collector")
        now = time.monotonic()
        return stats_document(
            writer=writer,
            started_at=started_at,
            events=c.writer.stream_events if c else {},
            last=c.writer.stream_last if c else {},
            streams=streams,
            exchange=exchange,
            events_per_second=rate.rate(now, c.writer.events if c else 0),
            backlog=backlog,
            gaps_last_hour=c.gaps.count(now) if c else 0,
        )

    return stats


async def collector_process(feed: DataFeed, redis_url: str, host: str, port: int, log_file: str) -> int:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    metrics.init_series(feed.spec.exchange, feed.streams(), "collector")
    state: dict[str, Collector] = {}
    rate = RateWindow()
    rate.sample(time.monotonic(), 0)  # the base of the rate until the process is a window old
    stats = _stats_source(feed, redis_url, state, rate)
    health = HealthServer(host, port, _ready_checks(feed, redis_url, state), stats=stats)
    await health.start()
    client = redis_buffer.connect(redis_url)
    ckey = collector_key(feed.spec.exchange)
    await _set_state(client, ckey, "running")
    started = time.monotonic()
    from cryptofeed.exceptions import UnsupportedSymbol

    progress = asyncio.create_task(_report_messages(client, ckey, state, rate))
    try:
        collector = await run_collector(
            feed, redis_url, stop, log_file=log_file, on_ready=lambda c: state.__setitem__("collector", c)
        )
    except UnsupportedSymbol as err:
        print(
            f"svoe collector: spec.symbols: {err}; use a symbol {feed.spec.exchange} lists, "
            "in cryptofeed's normalized form (e.g. BTC-USDT)",
            file=sys.stderr,
        )
        return 2
    except Exception as err:
        print(f"svoe collector: the feed failed: {err!r}", file=sys.stderr)
        return 1
    finally:
        progress.cancel()
        await _set_state(client, ckey, "stopped")
        await health.stop()
        await client.aclose()
    LOG.info("collector stopped after %.1fs: %d events", time.monotonic() - started, collector.events)
    return 0


async def _report_messages(client: Any, key: str, state: dict[str, Collector], rate: RateWindow) -> None:
    """Publish how many exchange messages the collector has handled: `svoe run --replay` ends
    once this reaches what the replay exchange sent. Also samples the event count for /stats
    (the window keeps one sample a second)."""
    while True:
        await asyncio.sleep(0.2)
        c = state.get("collector")
        if c is not None:
            rate.sample(time.monotonic(), c.writer.events)
            metrics.FEED_CONNECTED.labels(c.exchange).set(1 if c.connected else 0)
            with contextlib.suppress(Exception):
                await client.hset(key, "messages", c.messages)


async def _set_state(client: Any, key: str, state: str) -> None:
    for _ in range(40):
        try:
            await client.hset(key, mapping={"state": state, "pid": os.getpid(), "at": time.time()})
            return
        except Exception:
            await asyncio.sleep(0.25)
    LOG.warning("could not record collector state %s in redis", state)


async def aggregator_process(feed: DataFeed, redis_url: str, host: str, port: int) -> int:
    # Imported here: pyarrow and zmq are the aggregator's, the collector process never loads them.
    from svoe.feedpod.live import JOIN_SECONDS, LivePublisher

    live = feed.spec.live
    # A feed pod has POD_NAME (the operator sets it); `svoe run` and bare processes do not.
    in_pod = bool(os.environ.get("POD_NAME"))
    # Bound before the heavy imports, so that subscribers already waiting join during them.
    publisher = LivePublisher(live.bind_address(in_pod), live.port) if live.enabled else None
    bound_at = time.monotonic()

    from svoe.feedpod.aggregator import Aggregator
    from svoe.feedpod.block_writer import BlockWriter
    from svoe.lake.layout import writer_identity

    stop = asyncio.Event()
    install_signal_handlers(stop)
    metrics.init_series(feed.spec.exchange, feed.streams(), "aggregator")
    client = redis_buffer.connect(redis_url)
    # The block writer's process is started once, at start-up: spawning a process while ZMQ
    # subscribers are connected was seen to silence the PUB socket for them (measured, not
    # understood; the ZMQ test covers it).
    writer = BlockWriter(feed.spec.storage, writer_identity())
    writer.start()

    health = HealthServer(host, port, {"redis": _redis_check(client)}, serve_metrics=False)
    await health.start()
    agg = Aggregator(feed, client, writer, publisher)
    gc.freeze()  # start-up objects leave the GC's generations: shorter pauses on the live path
    if publisher is not None:
        wait = max(0.0, bound_at + JOIN_SECONDS - time.monotonic())
        await asyncio.to_thread(publisher.joined, wait)
    try:
        await agg.run(stop)
    finally:
        await health.stop()
        writer.close()
        if publisher is not None:
            publisher.close()
        await client.aclose()
    LOG.info(
        "aggregator stopped: %d rows, %d bytes in %d blocks, %d flush errors",
        agg.rows_written,
        agg.bytes_written,
        agg.blocks_written,
        agg.flush_errors,
    )
    if not agg.drained:
        # In a pod the Redis data lives on an emptyDir that goes with the pod: say so loudly.
        print("svoe aggregator: stopped before everything collected was in the lake", file=sys.stderr)
        return 1
    return 0
