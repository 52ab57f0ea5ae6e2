"""Reading the pods' `/stats` (the I/O half of health.py), beside each DataFeed's (and FeatureSet's) reconcile loop.

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
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiohttp
import kopf

from svoe.api import contract
from svoe.operator.config import OperatorConfig
from svoe.operator.errors import ApiError
from svoe.operator.health import parse_stats
from svoe.operator.kube import KubeClient

LOG = logging.getLogger(__name__)
READ_TIMEOUT = 3.0
# Reads in flight at once, over every DataFeed: they share the API client's connection pool with
# the reconcile writes, which must not queue behind a few hundred slow pods.
CONCURRENT_READS = asyncio.Semaphore(16)


class Readable(Protocol):
    """What the reader needs of a controller: which pods to read, where to keep their answers.

    `stats_port` and `parse` say which process of the pod answers (the collector by default)."""

    config: OperatorConfig
    serving: dict[tuple[str, str], list[str]]
    health: dict[tuple[str, str], dict[str, Any]]
    stats_port: int

    def api(self) -> KubeClient: ...

    def wake(self, namespace: str | None, name: str | None) -> None: ...

    def parse(self, doc: Mapping[str, Any], read_at: float) -> Any: ...


async def read_pod(
    controller: Readable,
    namespace: str,
    pod: str,
    port: int = contract.COLLECTOR_PORT,
    parse: Callable[[Mapping[str, Any], float], Any] = parse_stats,
) -> Any:
    try:
        async with CONCURRENT_READS:
            doc = await controller.api().proxy_get(namespace, pod, port, contract.STATS_PATH, READ_TIMEOUT)
        return parse(doc, time.time()) if isinstance(doc, dict) else None
    except (ApiError, aiohttp.ClientError, TimeoutError, ValueError, OverflowError, kopf.TemporaryError) as e:
        # A pod that does not answer, or answers nonsense (a newer or broken collector): no figures.
        LOG.debug("no stats from pod %s/%s: %s", namespace, pod, e)
        return None


async def read_once(controller: Readable, key: tuple[str, str]) -> None:
    pods = list(controller.serving.get(key, ()))
    port = controller.stats_port
    answers = await asyncio.gather(*(read_pod(controller, key[0], p, port, controller.parse) for p in pods))
    health = controller.health.setdefault(key, {})
    for pod, stats in zip(pods, answers, strict=True):
        if stats is None:
            health.pop(pod, None)
        else:
            health[pod] = stats
    controller.wake(*key)


async def read_until_stopped(controller: Readable, key: tuple[str, str], stopped: kopf.DaemonStopped) -> None:
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
