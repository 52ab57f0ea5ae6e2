"""The per-DataFeed (and per-FeatureSet) reconcile loop that kopf's daemon handler runs (handlers.py stays thin).

Level-triggered: a pass on every wake-up (a child or the DataFeed changed) and at least every
`resync_seconds`. A failed pass is retried with a capped exponential backoff, never a storm.
Beside it, the health reader reads the pods' `/stats` and wakes the loop to write them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import aiohttp
import kopf

from svoe.operator.controller import Controller
from svoe.operator.errors import ApiError
from svoe.operator.health_reader import Readable, read_until_stopped
from svoe.operator.metrics import OperatorMetrics
from svoe.operator.observe import Observed

RETRYABLE = (ApiError, kopf.TemporaryError, aiohttp.ClientError, OSError, TimeoutError)
BURST_SECONDS = 0.05  # a pod's create and its first status change come together: one pass for both


async def reconcile_until_stopped(
    controller: Controller,
    key: tuple[str, str],
    body: kopf.Body,
    children: Callable[[], Iterable[Observed]],
    stopped: kopf.DaemonStopped,
    logger: Any,
) -> None:
    await serve(controller, key, lambda: controller.reconcile(body, children()), stopped, logger, "reconcile")
    controller.forget(key)


class Served(Readable, Protocol):
    metrics: OperatorMetrics

    def wakeup(self, key: tuple[str, str]) -> asyncio.Event: ...


async def serve(
    controller: Served,
    key: tuple[str, str],
    reconcile: Callable[[], Awaitable[Any]],
    stopped: kopf.DaemonStopped,
    logger: Any,
    timer: str,
) -> None:
    """The reconcile loop of one resource, with its pods' health reader beside it, until stopped."""
    wake = controller.wakeup(key)
    resync = controller.config.resync_seconds
    reader = asyncio.create_task(read_until_stopped(controller, key, stopped))
    try:
        await _loop(controller.metrics, reconcile, stopped, logger, wake, resync, timer)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _loop(
    metrics: OperatorMetrics,
    reconcile: Callable[[], Awaitable[Any]],
    stopped: kopf.DaemonStopped,
    logger: Any,
    wake: asyncio.Event,
    resync: float,
    timer: str,
) -> None:
    failures = 0
    while not stopped:
        wake.clear()
        try:
            with metrics.timed(timer):
                await reconcile()
            failures = 0
        except RETRYABLE as e:
            failures += 1
            logger.warning(f"reconcile failed (attempt {failures}), retrying: {e}")
            await asyncio.sleep(min(0.5 * 2**failures, resync))
            continue
        waiter = asyncio.ensure_future(wake.wait())
        stopper = asyncio.ensure_future(stopped.wait())
        try:
            await asyncio.wait({waiter, stopper}, timeout=resync, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()
        if wake.is_set():
            await asyncio.sleep(BURST_SECONDS)
