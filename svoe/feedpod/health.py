"""HTTP endpoints of a feed pod process: /metrics, /healthz (alive), /readyz (ready) and, in the
collector, /stats (data health as JSON, built by svoe/feedpod/stats.py).

Readiness is a list of named checks; /readyz answers 200 only when all pass and lists each
check's verdict either way, so `kubectl describe` and a curl show why a pod is unready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from svoe.api.contract import HEALTHZ_PATH, METRICS_PATH, READYZ_PATH, STATS_PATH
from svoe.feedpod import metrics

LOG = logging.getLogger(__name__)

Check = Callable[[], Awaitable[tuple[bool, str]]]
Stats = Callable[[], Awaitable[dict[str, Any]]]


class HealthServer:
    def __init__(
        self, host: str, port: int, checks: dict[str, Check], serve_metrics: bool = True, stats: Stats | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.checks = checks
        self.serve_metrics = serve_metrics
        self.stats = stats
        self._runner: web.AppRunner | None = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        lines = []
        ready = True
        for name, check in self.checks.items():
            try:
                ok, detail = await asyncio.wait_for(check(), timeout=2)
            except Exception as err:
                ok, detail = False, f"check failed: {err!r}"
            ready &= ok
            lines.append(f"[{'+' if ok else '-'}] {name}: {detail}")
        body = "\n".join(lines) + f"\n{'ready' if ready else 'not ready'}\n"
        return web.Response(text=body, status=200 if ready else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(None, metrics.exposition)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def _stats(self, _: web.Request) -> web.Response:
        assert self.stats is not None
        return web.json_response(await self.stats(), headers={"Cache-Control": "no-store"})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(HEALTHZ_PATH, self._healthz)
        app.router.add_get(READYZ_PATH, self._readyz)
        if self.serve_metrics:
            app.router.add_get(METRICS_PATH, self._metrics)
        if self.stats is not None:
            app.router.add_get(STATS_PATH, self._stats)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        LOG.info("health endpoints on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
