"""The operator's own Prometheus metrics (docs/contracts.md) and the HTTP endpoint serving them."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LOG = logging.getLogger(__name__)


class OperatorMetrics:
    def __init__(self) -> None:
        # A registry of its own: the feed pod's multiprocess metrics never mix in.
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["namespace", "datafeed"]
        self.ready = Gauge(
            "svoe_datafeed_ready", "1 when every shard of the DataFeed is Ready", labels, registry=self.registry
        )
        self.degraded = Gauge(
            "svoe_datafeed_degraded", "1 when the DataFeed is Degraded", labels, registry=self.registry
        )
        self.shards = Gauge(
            "svoe_datafeed_shards", "Shards (feed pods) of the DataFeed", labels, registry=self.registry
        )
        self.reconcile = Histogram(
            "svoe_reconcile_duration_seconds",
            "Duration of one reconcile pass or handler call",
            ["handler"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def record_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        self.ready.labels(namespace, name).set(1 if conds.get("Ready") == "True" else 0)
        self.degraded.labels(namespace, name).set(1 if conds.get("Degraded") == "True" else 0)
        self.shards.labels(namespace, name).set(int(status.get("shardCount") or 0))

    def forget(self, namespace: str, name: str) -> None:
        for g in (self.ready, self.degraded, self.shards):
            with suppress(KeyError):
                g.remove(namespace, name)

    @contextmanager
    def timed(self, handler: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.reconcile.labels(handler).observe(time.perf_counter() - start)

    async def start(self, port: int, host: str = "0.0.0.0") -> None:
        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(_: web.Request) -> web.Response:
            return web.Response(text="ok\n")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        LOG.info("operator metrics on http://%s:%s/metrics", host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
