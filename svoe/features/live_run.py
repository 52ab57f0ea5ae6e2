"""`svoe features live`: the featurizer process. Subscribes to the source's live ZMQ streams
(every shard), runs svoe/features/live.py's state machine, publishes each row on its own PUB
socket as `FEATURESET.feature.SYMBOL`, records rows to Parquet with `--out`, and serves /metrics,
/healthz, /readyz and /stats. With a replay it also runs the source DataFeed (`svoe run`) in this
process, holding the replay until the subscription is in place, and exits when it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

from svoe.api.contract import HEALTH_HOST
from svoe.api.datafeed import DataFeed
from svoe.api.featureset import FeatureSet
from svoe.features import metrics
from svoe.features.live import Counters, Featurizer
from svoe.features.output import ParquetRecorder, Row, payload
from svoe.feedpod.health import HealthServer
from svoe.feedpod.stats import rfc3339

BATCH = 2000  # messages handled before yielding to the loop (the in-process replay shares it)
QUIET_SECONDS = 0.5  # after the source stopped, how long without a message means all arrived


@dataclass
class LiveResult:
    rows: int
    counters: Counters
    exit_code: int


class LiveFeaturizer:
    def __init__(self, featureset: FeatureSet, endpoints: Sequence[str], bind: str, port: int, out: str | None) -> None:
        self.name = featureset.name
        self.featurizer = Featurizer(featureset)
        self.spec = featureset.spec
        self.endpoints = list(endpoints)
        self.bind = bind
        self.port = port
        self.recorder = ParquetRecorder(self.spec, out) if out else None
        self.ctx = zmq.asyncio.Context()
        self.connected = asyncio.Event()
        self.started = time.time()
        self.last_source_event: float | None = None  # wall clock
        self.stale = False
        self._rate: list[tuple[float, int]] = []
        self._synced: dict[str, int] = {}
        for ch in self.spec.channels():
            metrics.SOURCE_EVENTS.labels(self.name, ch)
        for reason in ("duplicate", "malformed"):
            metrics.SKIPPED.labels(self.name, reason)

    # ---- sockets ------------------------------------------------------------------------------
    def open(self) -> None:
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, 0)  # never drop on our side: the featurizer must see every event
        for t in self.featurizer.topics():
            self.sub.setsockopt(zmq.SUBSCRIBE, t)
        self.monitor = self.sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        for e in self.endpoints:
            self.sub.connect(e)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, 100_000)
        self.pub.bind(f"tcp://{self.bind}:{self.port}")

    async def _watch_connections(self) -> None:
        handshakes = 0
        while True:
            msg = await recv_monitor_message(self.monitor)
            if msg["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                handshakes += 1
                if handshakes >= len(self.endpoints):
                    # The subscription frames follow the handshake; give them a moment to land.
                    await asyncio.sleep(0.2)
                    self.connected.set()

    # ---- the loop -----------------------------------------------------------------------------
    def _emit(self, rows: list[Row]) -> None:
        for row in rows:
            with contextlib.suppress(zmq.Again):
                self.pub.send_multipart(
                    [f"{self.name}.feature.{row[1]}".encode(), payload(self.spec, row)], zmq.NOBLOCK
                )
            metrics.ROWS.labels(self.name, row[1]).inc()
            if self.recorder is not None:
                self.recorder.add(row)

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) >= 3:
            self.featurizer.on_message(frames[0], frames[1], frames[2], time.monotonic())
        else:
            self.featurizer.counters.malformed += 1
        self.last_source_event = time.time()

    def _sync_metrics(self) -> None:
        """Counters into Prometheus once a second rather than per message."""
        c = self.featurizer.counters
        now = {**{f"events:{ch}": n for ch, n in c.events.items()}, "late": c.late, "duplicate": c.duplicates,
               "malformed": c.malformed}  # fmt: skip
        for key, value in now.items():
            delta = value - self._synced.get(key, 0)
            if delta <= 0:
                continue
            if key.startswith("events:"):
                metrics.SOURCE_EVENTS.labels(self.name, key.removeprefix("events:")).inc(delta)
            elif key == "late":
                metrics.LATE.labels(self.name).inc(delta)
            else:
                metrics.SKIPPED.labels(self.name, key).inc(delta)
        self._synced = now

    async def _read_batch(self, timeout: float) -> int:
        if not await self.sub.poll(int(timeout * 1000)):
            return 0
        n = 0
        while n < BATCH:
            try:
                frames = await self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._handle(frames)
            n += 1
        return n

    def _advance(self, caught_up: bool) -> None:
        rows = self.featurizer.advance(time.monotonic(), caught_up)
        if rows:
            self._emit(rows)

    def _refresh(self) -> None:
        now = time.time()
        newest = self.featurizer.newest_tick_time()
        if newest is not None:
            metrics.LAG.labels(self.name).set(now - newest)
        last = self.last_source_event if self.last_source_event is not None else self.started
        self.stale = now - last > self.spec.stale_after_seconds
        metrics.STALE.labels(self.name).set(1 if self.stale else 0)
        self._sync_metrics()
        self._rate = [(t, n) for t, n in self._rate if now - t <= 60] + [(now, self.featurizer.counters.rows)]

    async def run(self, stop: asyncio.Event, drain: bool) -> None:
        """Until `stop`; with `drain`, then read until the source has been quiet, and close every tick."""
        watcher = asyncio.create_task(self._watch_connections())
        next_refresh = 0.0
        try:
            while not stop.is_set():
                read = await self._read_batch(0.1)
                self._advance(caught_up=read < BATCH)
                if time.monotonic() >= next_refresh:
                    self._refresh()
                    next_refresh = time.monotonic() + 1.0
            if drain:
                while await self._read_batch(QUIET_SECONDS):
                    pass
                self._emit(self.featurizer.finish())
            self._refresh()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if self.recorder is not None:
                self.recorder.close()

    def close(self) -> None:
        self.monitor.close(linger=0)
        self.sub.close(linger=0)
        self.pub.close(linger=1000)
        self.ctx.term()

    # ---- health -------------------------------------------------------------------------------
    async def stats(self) -> dict[str, Any]:
        c = self.featurizer.counters
        rate = 0.0
        if len(self._rate) >= 2 and self._rate[-1][0] > self._rate[0][0]:
            (t0, n0), (t1, n1) = self._rate[0], self._rate[-1]
            rate = (n1 - n0) / (t1 - t0)
        newest = self.featurizer.newest_tick_time()
        return {
            "featureSet": self.name,
            "rowsPerSecond": round(rate, 3),
            "rows": c.rows,
            "lastTick": rfc3339(newest),
            "lagSeconds": None if newest is None else round(time.time() - newest, 3),
            "stale": self.stale,
            "lastSourceEvent": rfc3339(self.last_source_event),
            "lateEvents": c.late,
            "sourceEvents": sum(c.events.values()),
            "since": rfc3339(self.started),
        }

    async def _connected(self) -> tuple[bool, str]:
        return self.connected.is_set(), f"{len(self.endpoints)} source endpoint(s)"

    async def _fresh(self) -> tuple[bool, str]:
        return not self.stale, "source stale" if self.stale else "source sending"

    def health(self, host: str, port: int) -> HealthServer:
        return HealthServer(host, port, {"connected": self._connected, "fresh": self._fresh}, stats=self.stats)


def in_pod() -> bool:
    return bool(os.environ.get("POD_NAME"))


def publish_address(featureset: FeatureSet, pod: bool, out_stream: TextIO) -> tuple[str, int]:
    """Where the features are published. Off a pod a busy default port gives way to a free one, so
    two featurizers run side by side; a port the manifest names is used or fails with the fix."""
    from svoe.feedpod.local_run import choose_port

    live = featureset.spec.live
    bind = live.bind_address(pod)
    if pod:
        return bind, live.port
    asked = live.port if "port" in live.model_fields_set else None
    port, note = choose_port(asked, live.port, "the features' live stream", "spec.live.port", bind)
    if note:
        out_stream.write(f"({note})\n")
    return bind, port


async def run_live(featureset: FeatureSet, endpoints: Sequence[str], out: str | None, health_port: int,
                   out_stream: TextIO = sys.stderr) -> LiveResult:  # fmt: skip
    """Against running feeds, until SIGTERM or Ctrl-C."""
    import signal

    pod = in_pod()
    live = LiveFeaturizer(featureset, endpoints, *publish_address(featureset, pod, out_stream), out)
    live.open()
    health = live.health(HEALTH_HOST if pod else "127.0.0.1", health_port)
    await health.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    out_stream.write(
        f"features {featureset.name}: {', '.join(endpoints)} -> tcp://{live.bind}:{live.port}"
        f" (health http://127.0.0.1:{health_port}/stats)\n"
    )
    try:
        await live.run(stop, drain=False)
    finally:
        await health.stop()
        live.close()
    return LiveResult(live.featurizer.counters.rows, live.featurizer.counters, 0)


async def run_with_replay(featureset: FeatureSet, feed: DataFeed, replay_dir: str, out: str | None, health_port: int,
                          replay_speed: float | None, out_stream: TextIO = sys.stderr) -> LiveResult:  # fmt: skip
    """Run the source DataFeed (`svoe run --replay`) here, subscribed before the replay sends."""
    from svoe.feedpod.local_run import run_local
    from svoe.net import free_port

    doc = feed.model_dump(mode="json", by_alias=True, exclude_none=True)
    port = free_port()
    doc["spec"]["live"] = {"enabled": True, "port": port, "bind": "127.0.0.1"}
    feed = DataFeed.model_validate(doc)
    source = [f"tcp://127.0.0.1:{port}"]
    live = LiveFeaturizer(featureset, source, *publish_address(featureset, False, out_stream), out)
    live.open()
    health = live.health("127.0.0.1", health_port)
    await health.start()
    gate = asyncio.Event()

    async def open_gate() -> None:
        try:
            await asyncio.wait_for(live.connected.wait(), timeout=60)
        except TimeoutError:
            out_stream.write("warning: the live stream did not connect within 60 s; replaying anyway\n")
        gate.set()

    stop = asyncio.Event()
    opener = asyncio.create_task(open_gate())
    reader = asyncio.create_task(live.run(stop, drain=True))
    try:
        res = await run_local(
            feed, replay_dir, replay_speed=replay_speed, out=out_stream, replay_gate=gate, metrics_port=0
        )
    finally:
        stop.set()
        opener.cancel()
        await reader
        await health.stop()
        live.close()
    return LiveResult(live.featurizer.counters.rows, live.featurizer.counters, res.exit_code)
