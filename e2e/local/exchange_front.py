"""TEST INFRASTRUCTURE, not part of svoe: a front for `svoe replay serve` that routes by subscription.

Why it exists: `svoe replay serve` hands every captured websocket stream to the first client
connection, and the captures hold one connection for all symbols. One feed pod is one client, so
with two shards the first pod to connect would get every symbol (the other shard's too, which its
aggregator never reads) and the other pod nothing, so it would never become Ready. A real exchange
sends each connection what that connection subscribed to; this front restores that, so that the
end-to-end tests can run several shards against one replay.

What it does (Binance and Binance Futures combined streams, the format of the e2e's capture):
- one upstream websocket to the replay; its messages `{"stream": "sushiusdt@aggTrade", ...}` are
  split by stream name;
- a client subscribes in the URL, as cryptofeed does for Binance: `/stream?streams=a@x/b@y`;
- every captured stream is served once, as the replay serves its streams: to the oldest open
  connection subscribed to it. Messages of a stream nobody has subscribed to yet are held until
  someone does; when a connection closes, what it had not been sent yet goes to the next subscriber
  of those streams. Nothing is sent twice, and nothing is dropped while a subscriber may still come;
- REST requests (symbol lists, book snapshots) pass through to the replay unchanged.

It runs in the e2e's own process (`ThreadedExchangeFront`), or standalone in the kind e2e
(`python exchange_front.py --help`), where it also starts the replay. Single file, no imports from
the e2e package, so that the kind script can copy it into an image.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp
from aiohttp import web

LOG = logging.getLogger("exchange_front")


@dataclass(eq=False)
class _Client:
    number: int
    ws: web.WebSocketResponse
    streams: frozenset[str]
    outbox: deque[tuple[str, str]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    sent: int = 0


@dataclass(frozen=True)
class FrontStats:
    """A snapshot of what the front has passed on."""

    received: int  # messages read from the replay
    delivered: dict[str, int]  # per stream name: messages written to a subscriber's socket
    held: dict[str, int]  # per stream name: messages waiting for a subscriber
    unroutable: int  # upstream messages without a stream name (dropped)
    connections: int  # client websocket connections accepted so far
    rest: int  # REST requests passed through


class ExchangeFront:
    """The front itself, on the running event loop (see the module docstring)."""

    def __init__(
        self,
        upstream_ws: str,
        upstream_rest: str,
        upstream_ca: str | None,
        host: str = "127.0.0.1",
        port: int = 0,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        self.upstream_ws = upstream_ws.rstrip("/")
        self.upstream_rest = upstream_rest.rstrip("/")
        self.upstream_ca = upstream_ca
        self.host = host
        self.port = port
        self._cert = (cert_file, key_file) if cert_file else None
        self.ca_file = ""  # the CA that clients must trust (ours when we issue our own certificate)
        self._clients: list[_Client] = []
        self._held: dict[str, deque[str]] = {}
        self._delivered: Counter[str] = Counter()
        self._received = 0
        self._unroutable = 0
        self._rest = 0
        self._numbering = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._upstream: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        upstream_ctx = ssl.create_default_context()
        if self.upstream_ca:
            upstream_ctx.load_verify_locations(cafile=self.upstream_ca)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=upstream_ctx))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock, ssl_context=self._server_ssl()).start()
        LOG.info("exchange front on %s, upstream %s", self.ws_base, self.upstream_ws)

    def _server_ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if self._cert is not None:
            cert, key = self._cert
            assert cert is not None
            ctx.load_cert_chain(cert, key)
            return ctx
        import trustme  # a dependency of svoe (the replay issues its certificates with it)

        self._tmp = tempfile.TemporaryDirectory(prefix="svoe-front-")
        ca = trustme.CA(organization_name="svoe e2e exchange front")
        ca.issue_cert(self.host, "localhost", "127.0.0.1").configure_cert(ctx)
        path = Path(self._tmp.name) / "front-ca.pem"
        ca.cert_pem.write_to_path(str(path))
        self.ca_file = str(path)
        return ctx

    async def stop(self) -> None:
        self._stopping = True
        for c in list(self._clients):
            c.closed = True
            c.wake.set()
            with contextlib.suppress(Exception):
                await c.ws.close(code=1001, message=b"front stopped")
        if self._upstream is not None:
            self._upstream.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._upstream
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    @property
    def ws_base(self) -> str:
        return f"wss://{self.host}:{self.port}"

    @property
    def rest_base(self) -> str:
        return f"https://{self.host}:{self.port}"

    def stats(self) -> FrontStats:
        return FrontStats(
            received=self._received,
            delivered=dict(self._delivered),
            held={s: len(q) for s, q in self._held.items() if q},
            unroutable=self._unroutable,
            connections=self._numbering,
            rest=self._rest,
        )

    # -- HTTP ----------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        return await self._pass_rest(request)

    async def _pass_rest(self, request: web.Request) -> web.Response:
        assert self._session is not None
        self._rest += 1
        body = await request.read()
        async with self._session.request(
            request.method, self.upstream_rest + request.path_qs, data=body or None
        ) as resp:
            data = await resp.read()
            return web.Response(body=data, status=resp.status, content_type=resp.content_type)

    # -- websockets ------------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=0, autoping=True)
        await ws.prepare(request)
        self._numbering += 1
        streams = frozenset(s for s in request.query.get("streams", "").split("/") if s)
        client = _Client(self._numbering, ws, streams)
        self._clients.append(client)
        LOG.info("connection #%d subscribes to %d stream(s)", client.number, len(streams))
        if self._upstream is None:
            self._upstream = asyncio.create_task(self._pump_upstream(request.path_qs), name="front-upstream")
        self._route_held()
        sender = asyncio.create_task(self._send_loop(client), name=f"front-send-{client.number}")
        self._tasks.add(sender)
        try:
            async for _ in ws:  # reading answers the client's pings; clients send nothing else
                pass
        finally:
            client.closed = True
            client.wake.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            self._tasks.discard(sender)
            self._clients.remove(client)
            # What it was not sent goes back, in order, to the front of its streams' queues.
            for stream, data in reversed(client.outbox):
                self._held.setdefault(stream, deque()).appendleft(data)
            client.outbox.clear()
            self._route_held()
            LOG.info("connection #%d closed after %d message(s)", client.number, client.sent)
        return ws

    def _owner(self, stream: str) -> _Client | None:
        return next((c for c in self._clients if not c.closed and stream in c.streams), None)

    def _route_held(self) -> None:
        for stream, queue in self._held.items():
            if queue and (owner := self._owner(stream)) is not None:
                owner.outbox.extend((stream, d) for d in queue)
                queue.clear()
                owner.wake.set()

    def _on_upstream(self, data: str) -> None:
        self._received += 1
        match = re.match(r'\s*\{\s*"stream"\s*:\s*"([^"]+)"', data)
        if match is None:
            try:
                stream = json.loads(data).get("stream")
            except (ValueError, AttributeError):
                stream = None
            if not isinstance(stream, str):
                self._unroutable += 1
                LOG.warning("upstream message without a stream name dropped: %.200s", data)
                return
        else:
            stream = match.group(1)
        owner = self._owner(stream)
        if owner is None:
            self._held.setdefault(stream, deque()).append(data)
        else:
            owner.outbox.append((stream, data))
            owner.wake.set()

    async def _pump_upstream(self, path_qs: str) -> None:
        assert self._session is not None
        while not self._stopping:
            try:
                async with self._session.ws_connect(
                    self.upstream_ws + path_qs, max_msg_size=0, autoping=True, compress=0
                ) as up:
                    async for msg in up:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            self._on_upstream(msg.data)
                        elif msg.type == aiohttp.WSMsgType.BINARY:
                            self._on_upstream(msg.data.decode())
                        elif msg.type == aiohttp.WSMsgType.ERROR:
                            break
            except (aiohttp.ClientError, OSError) as err:
                LOG.warning("upstream connection failed: %s; reconnecting", err)
            if not self._stopping:
                # The replay resumes unfinished streams on the next connection.
                await asyncio.sleep(0.5)

    async def _send_loop(self, c: _Client) -> None:
        while not c.closed:
            if not c.outbox:
                c.wake.clear()
                await c.wake.wait()
                continue
            stream, data = c.outbox[0]
            try:
                await c.ws.send_str(data)
            except (ConnectionError, RuntimeError):
                return  # left in the outbox: handed to the next subscriber
            c.outbox.popleft()
            c.sent += 1
            self._delivered[stream] += 1


class ThreadedExchangeFront:
    """An ExchangeFront on its own event loop thread, for synchronous tests."""

    def __init__(self, upstream_ws: str, upstream_rest: str, upstream_ca: str | None) -> None:
        self.front = ExchangeFront(upstream_ws, upstream_rest, upstream_ca)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.front.start())
            except BaseException as err:
                errors.append(err)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.front.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="exchange-front", daemon=True)
        self._thread.start()
        if not started.wait(20) or errors:
            raise RuntimeError(f"the exchange front did not start: {errors!r}")

    def stats(self) -> FrontStats:
        assert self._loop is not None

        async def get() -> FrontStats:
            return self.front.stats()

        return asyncio.run_coroutine_threadsafe(get(), self._loop).result(10)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(20)
            self._loop = None


@dataclass
class ReplayProcess:
    """`svoe replay serve CAPTURES EXCHANGE --speed S` as a child process, with its printed endpoints."""

    proc: subprocess.Popen[str]
    ws_base: str
    rest_base: str
    ca_file: str
    log: Path

    @classmethod
    def start(
        cls, svoe: Sequence[str], captures: str, exchange: str, speed: float, log: Path, port: int = 0
    ) -> ReplayProcess:
        argv = [*svoe, "replay", "serve", captures, exchange, "--speed", str(speed), "--port", str(port)]
        out = log.open("w")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=out, text=True)
        assert proc.stdout is not None
        found: dict[str, str] = {}
        for line in proc.stdout:
            out.write(line)
            out.flush()
            for label in ("websocket base", "rest base", "CA file"):
                if line.strip().startswith(label + ":"):
                    found[label] = line.split(":", 1)[1].strip()
            if len(found) == 3:
                break
        if len(found) != 3:
            proc.wait(10)
            raise RuntimeError(f"`svoe replay serve` did not print its endpoints; see {log}")
        # Keep draining its stdout (progress lines) into the log, so the pipe never fills.
        threading.Thread(target=_copy, args=(proc.stdout, out), daemon=True).start()
        return cls(proc, found["websocket base"], found["rest base"], found["CA file"], log)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _copy(src: IO[str], dst: IO[str]) -> None:
    with contextlib.suppress(ValueError, OSError):
        for line in src:
            dst.write(line)
            dst.flush()


# -- standalone (kind e2e) -----------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> int:
    replay = ReplayProcess.start(
        [args.svoe], args.captures, args.exchange, args.speed, Path(args.replay_log), port=args.replay_port
    )
    front = ExchangeFront(replay.ws_base, replay.rest_base, replay.ca_file, args.host, args.port, args.cert, args.key)
    await front.start()
    print(f"exchange front on {front.ws_base} (replay {replay.ws_base})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    last: FrontStats | None = None
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 10)
        stats = front.stats()
        if stats != last:
            print(json.dumps(stats.__dict__, sort_keys=True), flush=True)
            last = stats
    await front.stop()
    replay.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="A replay exchange that routes by subscription (svoe e2e).")
    p.add_argument("captures", help="capture directory (../shared/captures)")
    p.add_argument("exchange", help="BINANCE or BINANCE_FUTURES")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed (real time x SPEED)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--cert", required=True, help="PEM certificate of the front (clients trust its CA)")
    p.add_argument("--key", required=True, help="PEM private key of the front")
    p.add_argument("--svoe", default="svoe", help="the svoe executable")
    p.add_argument("--replay-port", type=int, default=0, help="port of the replay behind the front")
    p.add_argument("--replay-log", default=os.path.join(tempfile.gettempdir(), "replay.log"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
