"""A local exchange: serves a capture's REST answers and websocket streams over TLS.

An unmodified cryptofeed client, redirected with :func:`svoe.feedpod.endpoints.redirected_feed_class`,
connects to it as it would to the exchange. One port serves both REST (``https://``) and
websockets (``wss://``); the certificate comes from a throw-away CA whose PEM is :attr:`ca_file`.

Routing of websocket streams (cryptofeed 3 does not open the same connections as the 2021
recording): a captured stream goes to the first client connection whose path matches the
recorded one; when none matches, all such streams are merged by timestamp into the first
connection. Each stream is served once: a connection that drops hands the rest of its streams to
the next one, so that reconnects count nothing twice. An exhausted connection stays open, idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import ssl
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from svoe.replay.capture import PATH_ALIASES, Capture, RestIndex, WsStream, load_capture
from svoe.replay.faults import Faults
from svoe.replay.sequencing import Sequencer, sequencer_for

LOG = logging.getLogger(__name__)

__all__ = ["ReplayServer"]

# Messages sent back to back before the pump yields: keeps an in-process client responsive
# when the replay runs as fast as possible.
_YIELD_EVERY = 64
_PASS_LOG_SECONDS = 5.0


@dataclass(eq=False)
class _Cursor:
    index: int
    stream: WsStream
    path: str
    expects_subscribe: bool
    position: int = 0
    loop: int = 0
    done: bool = False
    owner: _Connection | None = None
    sent: int = 0


@dataclass(eq=False)
class _Connection:
    number: int
    path: str
    ws: web.WebSocketResponse
    accepted: float
    first_frame: asyncio.Event = field(default_factory=asyncio.Event)
    ready: bool = False
    closed: bool = False
    cursors: list[_Cursor] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    received: int = 0
    sent: int = 0


class ReplayServer:
    """Replays ``capture_dir``'s recording of ``exchange``.

    speed: None sends as fast as the client reads; a number replays in real time times ``speed``.
    loop: replay again and again, with sequence numbers rewritten so books stay consistent
      (supported where :mod:`svoe.replay.sequencing` knows the exchange; others are refused).
    settle: seconds without a new connection before streaming starts; cryptofeed opens all its
      connections at once and each resets shared book state when it subscribes, so streaming
      waits until every connection has done so.
    """

    def __init__(
        self,
        capture_dir: str | Path,
        exchange: str,
        speed: float | None = None,
        loop: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        settle: float = 0.25,
        faults: Faults | None = None,
    ) -> None:
        if speed is not None and speed <= 0:
            raise ValueError(f"speed must be a positive number (or None for as fast as possible), got {speed!r}")
        self.capture: Capture = load_capture(capture_dir, exchange)
        if not self.capture.streams:
            raise ValueError(f"{exchange}: the capture in {capture_dir} has no websocket stream (EX.ws.N.0 files)")
        self.exchange = exchange
        self.speed = speed
        self.loop = loop
        self.host = host
        self.port = port
        self.settle = settle
        self._sequencer: Sequencer = sequencer_for(self.capture, loop)
        self.faults = faults or Faults()
        if self.faults.drop_match is not None:
            self.faults.resolve([_text(m.data) for st in self.capture.streams for m in st.messages])
        self._rest = RestIndex(self.capture.http_answers, PATH_ALIASES.get(exchange))
        self._cursors = [
            _Cursor(i, s, s.path.split("?", 1)[0], bool(s.client_frames), done=not s.messages)
            for i, s in enumerate(self.capture.streams)
        ]
        first = [s.messages[0].timestamp for s in self.capture.streams if s.messages]
        last = [s.messages[-1].timestamp for s in self.capture.streams if s.messages]
        self._t0 = min(first) if first else 0.0
        count = sum(len(s.messages) for s in self.capture.streams)
        duration = (max(last) - self._t0) if last else 0.0
        # one average gap between passes, so a looped pass does not start on the last message's tick
        self._period = duration + (duration / count if count else 0.0) + 1e-3
        self._wall0: float | None = None
        self._connections: list[_Connection] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_accept = 0.0
        self._numbering = 0
        self._runner: web.AppRunner | None = None
        self._tmpdir: Path | None = None
        self._cleanup: Callable[[], object] | None = None
        self._ca_file: Path | None = None
        self._bound_port: int | None = None
        self.exhausted = asyncio.Event()
        self.sent = 0
        self.rest_served = 0
        self.rest_missing = 0
        self.connections_accepted = 0
        self.loops_completed = 0
        self._last_pass_log = 0.0
        if all(c.done for c in self._cursors):
            self.exhausted.set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("ReplayServer already started")
        self._tmpdir = Path(tempfile.mkdtemp(prefix="svoe-replay-"))
        # also removed at garbage collection / interpreter exit when stop() is never reached
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._tmpdir), True)
        server_ctx, self._ca_file = _tls_material(self._tmpdir, self.host)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self._bound_port = int(sock.getsockname()[1])
        site = web.SockSite(self._runner, sock, ssl_context=server_ctx)
        await site.start()
        LOG.info(
            "replay %s: serving %d stream(s), %d REST answer(s) on %s (speed=%s, loop=%s)",
            self.exchange,
            len(self._cursors),
            len(self.capture.http_answers),
            self.ws_base,
            "max" if self.speed is None else self.speed,
            self.loop,
        )

    async def stop(self) -> None:
        for conn in list(self._connections):
            conn.closed = True
            conn.wakeup.set()
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"replay stopped")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = self._tmpdir = None

    async def disconnect_clients(self, code: int = 1012) -> int:
        """Close every client websocket (as an exchange restart would); returns how many.

        Unfinished streams resume on the client's next connection.
        """
        conns = [c for c in self._connections if not c.closed]
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.ws.close(code=code, message=b"replay: disconnect requested")
        return len(conns)

    async def __aenter__(self) -> ReplayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ public state

    @property
    def bound_port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("ReplayServer not started")
        return self._bound_port

    @property
    def _authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.bound_port}"

    @property
    def ws_base(self) -> str:
        return f"wss://{self._authority}"

    @property
    def rest_base(self) -> str:
        return f"https://{self._authority}"

    @property
    def ca_file(self) -> str:
        if self._ca_file is None:
            raise RuntimeError("ReplayServer not started")
        return str(self._ca_file)

    @property
    def total_messages(self) -> int:
        """Messages in one pass over every captured stream."""
        return sum(len(c.stream.messages) for c in self._cursors)

    async def wait_exhausted(self, timeout: float | None = None) -> None:
        """Until every stream has been sent once (never, when looping)."""
        await asyncio.wait_for(self.exhausted.wait(), timeout)

    def stats(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "sent": self.sent,
            "total_per_pass": self.total_messages,
            "loops_completed": self.loops_completed,
            "exhausted": self.exhausted.is_set(),
            "connections_accepted": self.connections_accepted,
            "connections_open": sum(1 for c in self._connections if not c.closed),
            "rest_served": self.rest_served,
            "rest_missing": self.rest_missing,
            "streams": {
                c.stream.name: {
                    "position": c.position,
                    "loop": c.loop,
                    "done": c.done,
                    "owner": c.owner.number if c.owner else None,
                }
                for c in self._cursors
            },
        }

    # ------------------------------------------------------------------ HTTP

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        return self._rest_answer(request)

    def _rest_answer(self, request: web.Request) -> web.Response:
        query = parse_qsl(request.query_string, keep_blank_values=True)
        answer, first_time = self._rest.lookup_with_state(request.path, query)
        if answer is None:
            self.rest_missing += 1
            LOG.warning("replay %s: no captured REST answer for %s", self.exchange, request.path_qs)
            return web.json_response(
                {"error": f"replay: no captured answer for {request.path_qs}", "captured": self._rest.paths()},
                status=404,
            )
        body = answer.body
        # Recorded answers are served verbatim the first time (the reference counts depend on
        # them); a looped replay or a resync after they ran out gets one fitted to the stream.
        if self.loop or not first_time:
            body = self._sequencer.fit_rest(request.path, dict(query), body)
        self.rest_served += 1
        return web.Response(text=body, content_type="application/json", charset="utf-8")

    # ------------------------------------------------------------------ websockets

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        # No compression: the replay measures the client, not deflate.
        ws = web.WebSocketResponse(compress=False, max_msg_size=0, autoping=True)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        self._numbering += 1
        self.connections_accepted += 1
        conn = _Connection(self._numbering, request.path, ws, loop.time())
        self._last_accept = conn.accepted
        self._connections.append(conn)
        LOG.info("replay %s: connection #%d on %s", self.exchange, conn.number, request.path_qs[:120])
        reader = asyncio.create_task(self._read_client(conn), name=f"replay-read-{conn.number}")
        pump = asyncio.create_task(self._pump(conn), name=f"replay-pump-{conn.number}")
        self._tasks.update((reader, pump))
        try:
            await reader
        finally:
            conn.closed = True
            conn.wakeup.set()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            self._tasks.discard(reader)
            self._tasks.discard(pump)
            self._connections.remove(conn)
            self._release(conn)
            LOG.info("replay %s: connection #%d closed after %d message(s)", self.exchange, conn.number, conn.sent)
        return ws

    async def _read_client(self, conn: _Connection) -> None:
        # Reading is also what answers the client's pings (aiohttp autoping).
        async for msg in conn.ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                conn.received += 1
                conn.first_frame.set()
            elif msg.type == WSMsgType.ERROR:
                break

    async def _become_ready(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        expects_subscribe = any(c.expects_subscribe for c in self._cursors)
        if expects_subscribe:
            await conn.first_frame.wait()
        while (wait := self._last_accept + self.settle - loop.time()) > 0:
            await asyncio.sleep(wait)
        conn.ready = True

    def _assign(self) -> None:
        ready = [c for c in self._connections if c.ready and not c.closed]
        if not ready:
            return
        for cursor in self._cursors:
            if cursor.done or cursor.owner is not None:
                continue
            matching = [c for c in ready if c.path == cursor.path]
            target = matching[0] if matching else ready[0]
            cursor.owner = target
            target.cursors.append(cursor)
            self._sequencer.on_assigned(cursor.index)
            target.wakeup.set()
            LOG.info(
                "replay %s: %s (%s) -> connection #%d%s",
                self.exchange,
                cursor.stream.name,
                cursor.stream.path[:60],
                target.number,
                "" if matching else " (merged: no connection on the recorded path)",
            )

    def _release(self, conn: _Connection) -> None:
        released = [c for c in conn.cursors if not c.done]
        for cursor in conn.cursors:
            cursor.owner = None
        conn.cursors.clear()
        if released:
            LOG.info(
                "replay %s: connection #%d left %d stream(s) unfinished; the next connection resumes them",
                self.exchange,
                conn.number,
                len(released),
            )
            self._assign()

    def _next_cursor(self, conn: _Connection) -> _Cursor | None:
        best: _Cursor | None = None
        best_ts = 0.0
        for cursor in conn.cursors:
            if cursor.done:
                continue
            ts = cursor.stream.messages[cursor.position].timestamp + cursor.loop * self._period
            if best is None or ts < best_ts:
                best, best_ts = cursor, ts
        return best

    async def _pump(self, conn: _Connection) -> None:
        try:
            await self._stream_to(conn)
        except asyncio.CancelledError:
            raise
        except Exception:
            # a replay bug must not leave the client waiting on a silent socket
            LOG.exception("replay %s: streaming to connection #%d failed; closing it", self.exchange, conn.number)
            await conn.ws.close(code=1011, message=b"replay failure")

    async def _stream_to(self, conn: _Connection) -> None:
        await self._become_ready(conn)
        self._assign()
        loop = asyncio.get_running_loop()
        burst = 0
        while not conn.closed:
            cursor = self._next_cursor(conn)
            if cursor is None:
                conn.wakeup.clear()
                await conn.wakeup.wait()
                continue
            message = cursor.stream.messages[cursor.position]
            if self.speed is not None:
                now = loop.time()
                if self._wall0 is None:
                    self._wall0 = now
                due = self._wall0 + (message.timestamp + cursor.loop * self._period - self._t0) / self.speed
                if due > now:
                    await asyncio.sleep(due - now)
                    burst = 0
                    if conn.closed or cursor.owner is not conn:
                        continue
            data = self._sequencer.rewrite(cursor.index, cursor.position, cursor.loop, message)
            if self.faults.drop_match is not None and self.faults.drops(_text(data)):
                self._advance(cursor)  # never sent, as if lost on the way
                continue
            try:
                if isinstance(data, bytes):
                    await conn.ws.send_bytes(data)
                else:
                    await conn.ws.send_str(data)
            except (ConnectionError, RuntimeError) as exc:
                # the client went away; the reader notices and the stream is handed on
                LOG.debug("replay %s: send on #%d failed: %s", self.exchange, conn.number, exc)
                return
            self._sequencer.on_sent(cursor.index, cursor.position, cursor.loop)
            conn.sent += 1
            cursor.sent += 1
            self.sent += 1
            self._advance(cursor)
            if self.faults.closes(self.sent):
                LOG.info(
                    "replay %s: closing connection #%d after message %d (fault)", self.exchange, conn.number, self.sent
                )
                await conn.ws.close(code=1012, message=b"replay fault: connection closed")
                return
            burst += 1
            if burst >= _YIELD_EVERY:
                burst = 0
                await asyncio.sleep(0)

    def _advance(self, cursor: _Cursor) -> None:
        cursor.position += 1
        if cursor.position < len(cursor.stream.messages):
            return
        if self.loop:
            cursor.position = 0
            cursor.loop += 1
            completed = min(c.loop for c in self._cursors if c.stream.messages)
            if completed > self.loops_completed:
                self.loops_completed = completed
                # a fast loop completes hundreds of passes a second: log a few, not all
                now = time.monotonic()
                if now - self._last_pass_log >= _PASS_LOG_SECONDS:
                    self._last_pass_log = now
                    LOG.info("replay %s: pass %d complete (%d messages sent)", self.exchange, completed, self.sent)
            return
        cursor.done = True
        LOG.info("replay %s: %s exhausted after %d message(s)", self.exchange, cursor.stream.name, cursor.sent)
        if all(c.done for c in self._cursors):
            LOG.info("replay %s: every stream sent (%d messages)", self.exchange, self.sent)
            self.exhausted.set()


def _text(data: str | bytes) -> str:
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def _tls_material(directory: Path, host: str) -> tuple[ssl.SSLContext, Path]:
    """A throw-away CA and a server certificate for ``host`` (and localhost/loopback)."""
    try:
        import trustme
    except ImportError as exc:  # trustme is a dev dependency: the replay is a test and benchmark tool
        raise RuntimeError(
            "the replay server needs trustme for its throw-away certificate: uv sync --group dev"
        ) from exc

    ca = trustme.CA(organization_name="svoe replay")
    names = list(dict.fromkeys([host, "localhost", "127.0.0.1", "::1"]))
    cert = ca.issue_cert(*names)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca_file = directory / "replay-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ctx, ca_file
