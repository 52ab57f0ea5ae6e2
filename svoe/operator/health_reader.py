"""Reading the feed pods' `/stats` (the I/O half of health.py), beside each DataFeed's reconcile loop.

Every `health_interval_seconds` it reads each serving replica's collector through the API
server's pod proxy, all pods at once with a short timeout, stores the answers in the
controller, and wakes the reconcile loop, which writes them into the status. A pod that does
not answer keeps no stale figures: its entry is dropped, so the status shows nothing rather
than an old rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp
import kopf

from svoe.operator import render
from svoe.operator.controller import Controller
from svoe.operator.errors import ApiError
from svoe.operator.health import PodStats, parse_stats

LOG = logging.getLogger(__name__)
READ_TIMEOUT = 3.0
STATS_PATH = "/stats"
# Reads in flight at once, over every DataFeed: they share the API client's connection pool with
# the reconcile writes, which must not queue behind a few hundred slow pods.
CONCURRENT_READS = asyncio.Semaphore(16)


async def read_pod(controller: Controller, namespace: str, pod: str) -> PodStats | None:
    try:
        async with CONCURRENT_READS:
            doc = await controller.api().proxy_get(namespace, pod, render.COLLECTOR_PORT, STATS_PATH, READ_TIMEOUT)
        return parse_stats(doc, time.time()) if isinstance(doc, dict) else None
    except (ApiError, aiohttp.ClientError, TimeoutError, ValueError, OverflowError, kopf.TemporaryError) as e:
        # A pod that does not answer, or answers nonsense (a newer or broken collector): no figures.
        LOG.debug("no stats from pod %s/%s: %s", namespace, pod, e)
        return None


async def read_once(controller: Controller, key: tuple[str, str]) -> None:
    pods = list(controller.serving.get(key, ()))
    answers = await asyncio.gather(*(read_pod(controller, key[0], p) for p in pods))
    health = controller.health.setdefault(key, {})
    for pod, stats in zip(pods, answers, strict=True):
        if stats is None:
            health.pop(pod, None)
        else:
            health[pod] = stats
    controller.wake(*key)


async def read_until_stopped(controller: Controller, key: tuple[str, str], stopped: kopf.DaemonStopped) -> None:
    interval = controller.config.health_interval_seconds
    if interval <= 0:
        return
    while not stopped:
        if controller.serving.get(key):
            try:
                await read_once(controller, key)
            except Exception:  # never end the reader: frozen figures would turn the feed Stale
                LOG.exception("reading the health of %s/%s failed; retrying in %gs", *key, interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), timeout=interval)
