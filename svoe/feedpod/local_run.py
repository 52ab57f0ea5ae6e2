"""`svoe run`: the feed pod on a laptop. The same collector and aggregator code as the pod's
containers, as two local processes around a private redis-server, optionally fed by the replay
exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import redis
import redis.asyncio as aioredis
import yaml

from svoe.api import DataFeed
from svoe.api.contract import (
    COLLECTOR_PORT,
    METRICS_PATH,
    collector_key,
    heartbeat_key,
    stats_key,
    stream_key,
    writer_key,
)
from svoe.feedpod.redis_buffer import buffer_streams
from svoe.feedpod.stats import backlog_total, stream_backlogs
from svoe.lake.layout import STATE_DIR, resolve, sanitize_writer
from svoe.net import free_port, port_free


class RunError(Exception):
    """A run that cannot start; the message names the fix."""


def choose_port(port: int | None, default: int, what: str, flag: str, host: str = "0.0.0.0") -> tuple[int, str]:
    """The port to use and a note for the user. A port the user asked for that is busy fails now,
    with the fix; a busy default is replaced by a free port, so two runs work side by side."""
    if port == 0:
        return free_port(), ""
    if port is not None:
        if not port_free(port, host):
            raise RunError(f"port {port} for {what} is in use: pass {flag} N, or {flag} 0 for a free one")
        return port, ""
    if port_free(default, host):
        return default, ""
    chosen = free_port()
    return chosen, f"{what}: port {default} is in use, using {chosen}"


class PortLock:
    """Held from choosing the ports until the children have bound them, so two runs started at
    the same moment do not both pick the free default."""

    def __init__(self) -> None:
        self._file = open(Path(tempfile.gettempdir()) / "svoe-run-ports.lock", "a")  # noqa: SIM115
        fcntl.flock(self._file, fcntl.LOCK_EX)

    async def release_when_bound(self, ports: list[tuple[int, str]], procs: list[subprocess.Popen[bytes]]) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(port_free(p, h) for p, h in ports):
            if any(p.poll() is not None for p in procs):
                break
            await asyncio.sleep(0.05)
        self.release()

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


def state_dir_for(feed: DataFeed) -> Path:
    """Where a run keeps its Redis AOF, metrics files and caches: beside a local lake, so a
    crashed run's unflushed events are recovered by the next run into the same lake."""
    lake = resolve(feed.spec.storage.lake)
    if lake.is_s3:
        state_home = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        base = state_home / "svoe" / lake.root.replace("/", "_")
    else:
        base = lake.local_root / STATE_DIR
    return (base / f"{feed.spec.exchange}-{feed.name}").resolve()


async def writer_for_run(client: aioredis.Redis, feed: DataFeed) -> str:
    """This run's writer identity (svoe/lake/layout.py). A run that finds unflushed entries of an
    earlier one keeps that run's identity, so its retried blocks replace their own objects; a run
    that starts clean is a new writer, so a re-run of the same capture is recognised as the same
    events seen again, not as new ones."""
    key = writer_key(feed.spec.exchange)
    stored = await client.get(key)
    if stored is not None:
        keys = [stream_key(feed.spec.exchange, ch, sym) for ch, sym in buffer_streams(feed)]
        unflushed = backlog_total(await stream_backlogs(client, feed.spec.exchange, keys))
        if unflushed:
            return stored.decode() if isinstance(stored, bytes) else str(stored)
    identity = sanitize_writer(f"{feed.name}-{uuid.uuid4().hex[:8]}")
    await client.set(key, identity)
    return identity


@dataclass
class RedisServer:
    proc: subprocess.Popen[bytes]
    url: str
    socket_path: str

    @staticmethod
    def executable(alternative: str = "") -> str:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RunError(
                "redis-server is not installed: install it (Debian/Ubuntu: apt-get install redis-server; "
                f"macOS: brew install redis){alternative}"
            )
        return exe

    @classmethod
    def start(cls, data_dir: Path) -> RedisServer:
        exe = cls.executable(" or pass --redis redis://HOST:PORT of a running server")
        data_dir.mkdir(parents=True, exist_ok=True)
        # Unix socket paths are limited to ~100 bytes, so the socket lives in /tmp, not the lake.
        sock = os.path.join(tempfile.gettempdir(), f"svoe-{uuid.uuid4().hex[:10]}.sock")
        args = [
            exe,
            "--port", "0",
            "--unixsocket", sock,
            "--unixsocketperm", "700",
            "--dir", str(data_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while not os.path.exists(sock):
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RunError(f"redis-server exited at start: {err.strip()}")
            if time.monotonic() > deadline:
                proc.kill()
                raise RunError("redis-server did not open its socket within 15s")
            time.sleep(0.02)
        # A persisted AOF (events a previous run left unflushed) is replayed before Redis serves.
        client = redis.Redis(unix_socket_path=sock)
        deadline = time.monotonic() + 300
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.BusyLoadingError:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise RunError(f"redis-server still loading its AOF in {data_dir} after 300s") from None
                time.sleep(0.1)
        client.close()
        return cls(proc, f"unix://{sock}", sock)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # SIGTERM: redis flushes the AOF before exiting
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)


def _child(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "svoe.cli", *args], env=env)


async def _until_started(
    client: aioredis.Redis, proc: subprocess.Popen[bytes], key: str, field: str, since: float, timeout: float = 300
) -> None:
    """Wait until a child has written its first state or heartbeat after `since`: it has its
    signal handlers by then. A SIGTERM before that kills it outright, and an aggregator killed so
    (a short capture on a slow machine) had flushed nothing."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError, ValueError):
            if float(await client.hget(key, field) or 0) >= since:
                return
        await asyncio.sleep(0.1)


async def _stop_child(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, then wait without blocking the loop: the replay server in this process must keep
    answering the child's websocket close handshake while it shuts down."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return await asyncio.to_thread(proc.wait)
    return proc.returncode


class Progress:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last_line = 0.0

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            self.out.write("\r\033[K" + text)
            self.out.flush()
        elif force or now - self.last_line >= 2.0:
            self.out.write(text + "\n")
            self.out.flush()
            self.last_line = now

    def done(self) -> None:
        if self.tty:
            self.out.write("\n")


@dataclass
class RunResult:
    collected: int
    flushed: int
    seconds: float
    exit_code: int
    started_at: float = 0.0  # wall clock, epoch seconds


async def _counts(client: aioredis.Redis, exchange: str) -> tuple[int, int]:
    h = await client.hgetall(stats_key(exchange))
    return int(h.get(b"collected", 0)), int(h.get(b"flushed", 0))


async def run_local(
    feed: DataFeed,
    replay_dir: str | None = None,
    redis_url: str | None = None,
    metrics_port: int | None = None,
    replay_speed: float | None = None,
    out: TextIO = sys.stderr,
    faults: Any = None,
    replay_gate: asyncio.Event | None = None,
) -> RunResult:
    """`metrics_port` None: COLLECTOR_PORT, or a free port when it is taken; 0: a free port. `replay_gate`:
    the replay sends nothing until it is set (a subscriber in this process is getting ready)."""
    started = time.monotonic()
    lock = PortLock()
    bound: list[tuple[int, str]] = []
    try:
        return await _run_local(
            feed, replay_dir, redis_url, metrics_port, replay_speed, out, started, lock, bound, faults, replay_gate
        )
    finally:
        lock.release()


async def _run_local(
    feed: DataFeed,
    replay_dir: str | None,
    redis_url: str | None,
    metrics_port: int | None,
    replay_speed: float | None,
    out: TextIO,
    started: float,
    lock: PortLock,
    bound: list[tuple[int, str]],
    faults: Any,
    replay_gate: asyncio.Event | None = None,
) -> RunResult:
    metrics_port, note = choose_port(metrics_port, COLLECTOR_PORT, METRICS_PATH, "--metrics-port")
    notes = [note] if note else []
    bound.append((metrics_port, "0.0.0.0"))
    live = feed.spec.live
    if live.enabled:
        asked = live.port if "port" in live.model_fields_set else None
        bind = live.bind_address(in_pod=False)
        live_port, note = choose_port(asked, live.port, "the live stream", "spec.live.port", bind)
        notes += [note] if note else []
        bound.append((live_port, bind))
        if live_port != live.port:
            doc = feed.model_dump(mode="json", by_alias=True, exclude_none=True)
            doc["spec"]["live"]["port"] = live_port
            feed = DataFeed.model_validate(doc)
    state = state_dir_for(feed)
    state.mkdir(parents=True, exist_ok=True)
    metrics_dir = state / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)

    server: Any = None
    redis: RedisServer | None = None
    procs: list[subprocess.Popen[bytes]] = []
    progress = Progress(out)
    try:
        if replay_dir is not None:
            from svoe.replay import ReplayServer

            server = ReplayServer(replay_dir, feed.spec.exchange, speed=replay_speed, faults=faults, gate=replay_gate)
            await server.start()
            doc = feed.model_dump(mode="json", by_alias=True, exclude_none=True)
            doc["spec"]["endpoints"] = {"websocket": server.ws_base, "rest": server.rest_base, "caFile": server.ca_file}
            feed = DataFeed.model_validate(doc)
            out.write(f"replaying {feed.spec.exchange} from {replay_dir} at {server.ws_base}\n")

        if redis_url is None:
            redis = RedisServer.start(state / "redis")
            redis_url = redis.url
        client = aioredis.Redis.from_url(redis_url)
        await client.delete(stats_key(feed.spec.exchange), collector_key(feed.spec.exchange))

        manifest = state / "datafeed.yaml"
        manifest.write_text(yaml.safe_dump(feed.model_dump(mode="json", by_alias=True, exclude_none=True)))
        env = dict(os.environ)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        env["XDG_CACHE_HOME"] = str(state / "cache")
        env["SVOE_WRITER"] = await writer_for_run(client, feed)
        common = ["--manifest", str(manifest), "--redis", redis_url]
        spawned = time.time()
        aggregator = _child(["aggregator", *common, "--health-port", str(free_port())], env)
        procs.append(aggregator)
        collector = _child(
            ["collector", *common, "--health-port", str(metrics_port), "--log-file", str(state / "feedhandler.log")],
            env,
        )
        procs.append(collector)
        await lock.release_when_bound(bound, procs)
        out.write(
            f"collecting {feed.spec.exchange} {','.join(feed.spec.channels)} for {len(feed.spec.symbols)} symbols "
            f"into {feed.spec.storage.lake} as writer {env['SVOE_WRITER']}\n"
            f"  metrics: http://127.0.0.1:{metrics_port}{METRICS_PATH}\n"
            + (
                f"  live:    tcp://{feed.spec.live.bind_address(in_pod=False)}:{feed.spec.live.port}\n"
                if feed.spec.live.enabled
                else ""
            )
            + "".join(f"  ({n})\n" for n in notes)
        )

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        exhausted_at: float | None = None
        last_collected, stable_since = -1, time.monotonic()
        exit_code = 0
        while not stop.is_set():
            await asyncio.sleep(0.2)
            collected, flushed = await _counts(client, feed.spec.exchange)
            progress.show(
                f"collected {collected:,} events | flushed {flushed:,} rows | backlog {collected - flushed:,}"
            )
            if collected != last_collected:
                last_collected, stable_since = collected, time.monotonic()
            for p in procs:
                if p.poll() is not None:
                    exit_code = p.returncode or 1
                    stop.set()
            if server is not None and server.exhausted.is_set():
                exhausted_at = exhausted_at or time.monotonic()
                # The capture is fully sent: stop once the collector has handled every message
                # sent and its events have settled (or, should counts never meet, after a minute).
                handled = int(await client.hget(collector_key(feed.spec.exchange), "messages") or 0)
                quiet = time.monotonic() - stable_since
                waited = time.monotonic() - exhausted_at
                if (handled >= server.sent and quiet >= 1.0) or waited >= 60:
                    if handled < server.sent:
                        out.write(f"\nwarning: the collector handled {handled} of {server.sent} messages sent\n")
                    stop.set()
        # Order matters: the collector writes out its buffer, then the aggregator drains it all.
        await _until_started(client, collector, collector_key(feed.spec.exchange), "at", spawned)
        code_c = await _stop_child(collector, timeout=60)
        await _until_started(client, aggregator, heartbeat_key(feed.spec.exchange), "beat", spawned)
        code_a = await _stop_child(aggregator, timeout=3600)
        if exit_code == 0:
            exit_code = code_c or code_a
        collected, flushed = await _counts(client, feed.spec.exchange)
        progress.show(f"collected {collected:,} events | flushed {flushed:,} rows", force=True)
        progress.done()
        await client.aclose()
        return RunResult(
            collected, flushed, time.monotonic() - started, exit_code, time.time() - (time.monotonic() - started)
        )
    finally:
        for p in procs:
            await _stop_child(p, timeout=30)
        if redis is not None:
            redis.stop()
        if server is not None:
            await server.stop()
