"""Running a whole cryptofeed feed in-process against a replay: for tests and benchmarks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svoe.exchanges.endpoints import redirected_feed_class
from svoe.replay.capture import REFERENCE_FEED_OPTIONS, capture_subscription
from svoe.replay.server import ReplayServer

LOG = logging.getLogger(__name__)

__all__ = ["ReplayRun", "feed_received", "replay_feed"]

Callback = Callable[[Any, float], Awaitable[None]]


@dataclass
class ReplayRun:
    exchange: str
    counts: dict[str, int]
    sent: int
    received: int
    seconds: float
    exhausted: bool
    loops_completed: int
    server_stats: dict[str, Any] = field(default_factory=dict)


def feed_received(feed: Any) -> int:
    """Websocket messages the feed's handlers have taken in (cryptofeed's own connection stats)."""
    from cryptofeed.connection import WSAsyncConn

    return sum(
        handler.conn.stats.received for handler in feed.connection_handlers if isinstance(handler.conn, WSAsyncConn)
    )


async def replay_feed(
    capture_dir: str | Path,
    exchange: str,
    *,
    callbacks: Mapping[str, Callback | list[Callback]] | None = None,
    subscription: Mapping[str, list[str]] | None = None,
    speed: float | None = None,
    loop: bool = False,
    seconds: float | None = None,
    settle: float = 0.5,
    timeout: float = 120.0,
    feed_kwargs: Mapping[str, Any] | None = None,
    fresh_symbols: bool = True,
) -> ReplayRun:
    """Replay ``exchange`` into an unmodified cryptofeed feed and count callbacks per channel.

    Without ``loop`` it runs until the server has sent everything, the feed has read all of it
    and the counts have not changed for ``settle`` seconds. With ``loop`` (or ``seconds``) it
    runs for ``seconds``. ``subscription`` defaults to the capture's, ``feed_kwargs`` are added to
    :data:`~svoe.replay.capture.REFERENCE_FEED_OPTIONS`. ``fresh_symbols`` drops
    cryptofeed's in-process symbol registry entry for the exchange first, so the symbol lists
    come from the replay like they would from the exchange.
    """
    if loop and seconds is None:
        raise ValueError("a looped replay never ends by itself: pass seconds=")
    sub = dict(subscription) if subscription is not None else capture_subscription(capture_dir, exchange)
    counts: Counter[str] = Counter()

    def counter(channel: str) -> Callback:
        async def count(obj: Any, receipt_timestamp: float) -> None:
            counts[channel] += 1

        return count

    all_callbacks: dict[str, list[Callback]] = {}
    for channel in sub:
        extra = (callbacks or {}).get(channel, [])
        all_callbacks[channel] = [counter(channel), *(extra if isinstance(extra, list) else [extra])]

    if fresh_symbols:
        from cryptofeed.symbols import Symbols

        Symbols.data.pop(exchange, None)

    server = ReplayServer(capture_dir, exchange, speed=speed, loop=loop)
    await server.start()
    started = time.monotonic()
    stop = asyncio.Event()
    try:
        feed_cls = redirected_feed_class(exchange, server.ws_base, server.rest_base, server.ca_file)
        kwargs: dict[str, Any] = {**REFERENCE_FEED_OPTIONS, **(feed_kwargs or {})}
        feed = feed_cls(subscription=sub, callbacks=all_callbacks, **kwargs)
        task = asyncio.create_task(feed.run(stop), name=f"replay-feed-{exchange}")
        deadline = started + (seconds if seconds is not None else timeout)
        stable_since, last_seen = time.monotonic(), -1
        while time.monotonic() < deadline:
            if task.done():
                task.result()  # a feed that died raises here
                break
            await asyncio.sleep(0.05)
            if seconds is not None:
                continue
            total = sum(counts.values())
            if total != last_seen:
                last_seen, stable_since = total, time.monotonic()
            if (
                server.exhausted.is_set()
                and feed_received(feed) >= server.sent
                and time.monotonic() - stable_since >= settle
            ):
                break
        else:
            if seconds is None:
                raise TimeoutError(
                    f"{exchange}: replay did not finish within {timeout}s "
                    f"(sent {server.sent}/{server.total_messages}, received {feed_received(feed)})"
                )
        received = feed_received(feed)
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        return ReplayRun(
            exchange=exchange,
            counts=dict(counts),
            sent=server.sent,
            received=received,
            seconds=time.monotonic() - started,
            exhausted=server.exhausted.is_set(),
            loops_completed=server.loops_completed,
            server_stats=server.stats(),
        )
    finally:
        stop.set()
        await server.stop()
