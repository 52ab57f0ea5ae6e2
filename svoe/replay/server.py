"""A local exchange: serves a capture's REST answers and websocket streams over TLS.

An unmodified cryptofeed client, redirected with :func:`svoe.exchanges.endpoints.redirected_feed_class`,
connects to it as it would to the exchange. One port serves both REST (``https://``) and
websockets (``wss://``); the certificate comes from a throw-away CA whose PEM is :attr:`ca_file`
(or is given, ``cert_file``/``key_file``).

Which connection gets which message is decided by :mod:`svoe.replay.routing`: like a real
exchange, every connection gets the streams it subscribed to, broadcast to all subscribers of a
stream, and a stream nobody subscribes to is held at its position (exchanges whose subscriptions
the replay cannot tell get each recorded connection served once, see there). One pump sends
every stream in recorded order and waits for each socket to take a message, so a client that
stops reading slows the others down: a test exchange, not a fair one. An exhausted connection
stays open, idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from svoe.replay.capture import PATH_ALIASES, Capture, RestIndex, load_capture
from svoe.replay.faults import Faults
from svoe.replay.routing import NAMINGS, Lane, Router, split_lanes
from svoe.replay.sequencing import Sequencer, loads_message, sequencer_for
from svoe.replay.tls import given_tls, throwaway_tls

LOG = logging.getLogger(__name__)

__all__ = ["ReplayServer"]

# Messages sent back to back before the pump yields: keeps an in-process client responsive
# when the replay runs as fast as possible.
_YIELD_EVERY = 64
_PASS_LOG_SECONDS = 5.0


@dataclass(eq=False)
class _Connection:
    number: int
    path: str
    subscription: frozenset[str] | None
    ws: web.WebSocketResponse
    first_frame: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    received: int = 0
    sent: int = 0


class ReplayServer:
    """Replays ``capture_dir``'s recording of ``exchange``.

    speed: None sends as fast as the clients read; a number replays in real time times ``speed``
      (a held stream's clock stops while it is held).
    loop: replay again and again, with sequence numbers rewritten so books stay consistent
      (supported where :mod:`svoe.replay.sequencing` knows the exchange; others are refused).
    settle: seconds without a new connection before a connection's subscriptions take effect;
      cryptofeed opens all its connections at once and each resets shared book state when it
      subscribes, so streaming waits until every connection has done so.
    clients: no subscription takes effect before this many connections were accepted, so that
      replicas started one after the other all get their streams from the start.
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
        cert_file: str | None = None,
        key_file: str | None = None,
        clients: int = 1,
        gate: asyncio.Event | None = None,
    ) -> None:
        if speed is not None and speed <= 0:
            raise ValueError(f"speed must be a positive number (or None for as fast as possible), got {speed!r}")
        if (cert_file is None) != (key_file is None):
            raise ValueError("give both cert_file and key_file, or neither (a throw-away certificate)")
        self.capture: Capture = load_capture(capture_dir, exchange)
        if not self.capture.streams:
            raise ValueError(f"{exchange}: the capture in {capture_dir} has no websocket stream (EX.ws.N.0 files)")
        self.exchange = exchange
        self.speed = speed
        self.loop = loop
        self.host = host
        self.port = port
        self.settle = settle
        if clients < 1:
            raise ValueError(f"clients must be at least 1, got {clients}")
        self.clients = clients
        self._enough_clients = asyncio.Event()
        self._gate = gate
        self._cert = (cert_file, key_file) if cert_file and key_file else None
        self._sequencer: Sequencer = sequencer_for(self.capture, loop)
        self.faults = faults or Faults()
        if self.faults.drop_match is not None:
            self.faults.resolve([_text(m.data) for st in self.capture.streams for m in st.messages])
        self._rest = RestIndex(self.capture.http_answers, PATH_ALIASES.get(exchange))
        self._naming = NAMINGS.get(exchange)
        self._lanes = split_lanes(self.capture.streams, self._naming, loads_message)
        self._router = Router(self._lanes, loop=loop)
        self._expects_subscribe = any(s.client_frames for s in self.capture.streams)
        first = [s.messages[0].timestamp for s in self.capture.streams if s.messages]
        last = [s.messages[-1].timestamp for s in self.capture.streams if s.messages]
        self._t0 = min(first) if first else 0.0
        count = sum(len(s.messages) for s in self.capture.streams)
        duration = (max(last) - self._t0) if last else 0.0
        # one average gap between passes, so a looped pass does not start on the last message's tick
        self._period = duration + (duration / count if count else 0.0) + 1e-3
        self._connections: dict[int, _Connection] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wakeup = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._last_accept = 0.0
        self._numbering = 0
        self._runner: web.AppRunner | None = None
        self._tmpdir: Path | None = None
        self._cleanup: Callable[[], object] | None = None
        self._ca_file: Path | None = None
        self._bound_port: int | None = None
        self.exhausted = asyncio.Event()
        self.sent = 0  # messages sent (once each, however many connections received them)
        self.delivered = 0  # messages written to sockets, summed over connections
        self.rest_served = 0
        self.rest_missing = 0
        self.connections_accepted = 0
        self.loops_completed = 0
        self._last_pass_log = 0.0
        if self._router.exhausted:
            self.exhausted.set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("ReplayServer already started")
        self._tmpdir = Path(tempfile.mkdtemp(prefix="svoe-replay-"))
        # also removed at garbage collection / interpreter exit when stop() is never reached
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._tmpdir), True)
        if self._cert is not None:
            server_ctx, self._ca_file = given_tls(*self._cert), Path(self._cert[0])
        else:
            server_ctx, self._ca_file = throwaway_tls(self._tmpdir, self.host)
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
        self._pump_task = asyncio.create_task(self._pump(), name="replay-pump")
        LOG.info(
            "replay %s: serving %d stream(s) of %d recorded connection(s), %d REST answer(s) on %s "
            "(speed=%s, loop=%s, routing=%s)",
            self.exchange,
            len(self._lanes),
            len(self.capture.streams),
            len(self.capture.http_answers),
            self.ws_base,
            "max" if self.speed is None else self.speed,
            self.loop,
            "by subscription" if self._naming else "each recorded connection once",
        )

    async def stop(self) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump_task
            self._pump_task = None
        for conn in list(self._connections.values()):
            conn.closed = True
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

        Their streams are held until the clients reconnect and subscribe again.
        """
        conns = [c for c in self._connections.values() if not c.closed]
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
        return sum(len(s.messages) for s in self.capture.streams)

    async def wait_exhausted(self, timeout: float | None = None) -> None:
        """Until every stream has been sent to its end once (never, when looping).

        A held stream is not sent: with streams nobody subscribes to, this waits for a subscriber.
        """
        await asyncio.wait_for(self.exhausted.wait(), timeout)

    def stats(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "sent": self.sent,
            "delivered": self.delivered,
            "total_per_pass": self.total_messages,
            "loops_completed": self.loops_completed,
            "exhausted": self.exhausted.is_set(),
            "connections_accepted": self.connections_accepted,
            "connections_open": sum(1 for c in self._connections.values() if not c.closed),
            "rest_served": self.rest_served,
            "rest_missing": self.rest_missing,
            "streams": self._router.lane_stats(),
        }

    # ------------------------------------------------------------------ HTTP

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        return self._rest_answer(request)

    def _rest_answer(self, request: web.Request) -> web.Response:
        query = parse_qsl(request.query_string, keep_blank_values=True)
        answer = self._rest.lookup(request.path, query)
        if answer is None:
            self.rest_missing += 1
            LOG.warning("replay %s: no captured REST answer for %s", self.exchange, request.path_qs)
            return web.json_response(
                {"error": f"replay: no captured answer for {request.path_qs}", "captured": self._rest.paths()},
                status=404,
            )
        # The sequencer fits book snapshots to the stream position of the client that asks; it
        # answers the recorded body where that is consistent (the reference counts depend on it).
        body = self._sequencer.fit_rest(request.path, dict(query), answer.body)
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
        subscription = self._naming.subscription(request.query) if self._naming else None
        conn = _Connection(self._numbering, request.path, subscription, ws)
        self._last_accept = loop.time()
        if self.connections_accepted >= self.clients:
            self._enough_clients.set()
        self._connections[conn.number] = conn
        LOG.info("replay %s: connection #%d on %s", self.exchange, conn.number, request.path_qs[:120])
        reader = asyncio.create_task(self._read_client(conn), name=f"replay-read-{conn.number}")
        joiner = asyncio.create_task(self._join(conn), name=f"replay-join-{conn.number}")
        self._tasks.update((reader, joiner))
        try:
            await reader
        finally:
            conn.closed = True
            joiner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await joiner
            self._tasks.discard(reader)
            self._tasks.discard(joiner)
            del self._connections[conn.number]
            self._leave(conn)
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

    async def _join(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        if self._expects_subscribe:
            await conn.first_frame.wait()
        await self._enough_clients.wait()
        if self._gate is not None:
            await self._gate.wait()
        while (wait := self._last_accept + self.settle - loop.time()) > 0:
            await asyncio.sleep(wait)
        if conn.closed:
            return
        self._joined(self._router.connect(conn.number, conn.path, conn.subscription, loop.time()), conn.number)

    def _leave(self, conn: _Connection) -> None:
        handed = self._router.disconnect(conn.number, asyncio.get_running_loop().time())
        self._joined(handed, None)

    def _joined(self, lanes: list[Lane], number: int | None) -> None:
        for lane in lanes:
            self._sequencer.on_joined(lane.stream_index, self._router.upcoming(lane))
            LOG.debug("replay %s: %s -> %s", self.exchange, lane.label, self._router.receivers(lane))
        if number is not None:
            LOG.info("replay %s: connection #%d joined %d stream(s)", self.exchange, number, len(lanes))
        self._wakeup.set()

    def _recorded_time(self, lane: Lane, message: int, loop: int) -> float:
        return self.capture.streams[lane.stream_index].messages[message].timestamp + loop * self._period

    async def _pump(self) -> None:
        try:
            await self._stream()
        except asyncio.CancelledError:
            raise
        except Exception:
            # a replay bug must not leave the clients waiting on silent sockets
            LOG.exception("replay %s: streaming failed; closing every connection", self.exchange)
            for conn in list(self._connections.values()):
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=1011, message=b"replay failure")

    async def _stream(self) -> None:
        loop = asyncio.get_running_loop()
        burst = 0
        while True:
            lane = self._router.next_lane(self._recorded_time)
            if lane is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            index, pass_ = self._router.head(lane)
            message = self.capture.streams[lane.stream_index].messages[index]
            if self.speed is not None and self._router.wall0 is not None:
                due = (
                    self._router.wall0
                    + self._router.offset(lane)
                    + (self._recorded_time(lane, index, pass_) - self._t0) / self.speed
                )
                if due > loop.time():
                    self._wakeup.clear()
                    # a subscriber that comes or goes meanwhile may change what is due first
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), due - loop.time())
                    burst = 0
                    continue
            data = self._sequencer.rewrite(lane.stream_index, index, pass_, message)
            if self.faults.drop_match is not None and self.faults.drops(_text(data)):
                self._advance(lane, sent=False)  # never sent, as if lost on the way
                continue
            receivers = await self._send(lane, data)
            if not receivers:
                continue  # every subscriber went away: the lane is held, the message with it
            self._sequencer.on_sent(lane.stream_index, index, pass_)
            self.sent += 1
            self._advance(lane, sent=True)
            if self.faults.closes(self.sent):
                for conn in receivers:
                    LOG.info(
                        "replay %s: closing connection #%d after message %d (fault)",
                        self.exchange,
                        conn.number,
                        self.sent,
                    )
                    await conn.ws.close(code=1012, message=b"replay fault: connection closed")
            burst += 1
            if burst >= _YIELD_EVERY:
                burst = 0
                await asyncio.sleep(0)

    async def _send(self, lane: Lane, data: str | bytes) -> list[_Connection]:
        took: list[_Connection] = []
        for number in self._router.receivers(lane):
            conn = self._connections.get(number)
            if conn is None or conn.closed:
                continue
            try:
                if isinstance(data, bytes):
                    await conn.ws.send_bytes(data)
                else:
                    await conn.ws.send_str(data)
            except (ConnectionError, RuntimeError) as exc:
                # the client went away: its streams are held (or handed on) now, not when the reader notices
                LOG.debug("replay %s: send on #%d failed: %s", self.exchange, conn.number, exc)
                conn.closed = True
                self._leave(conn)
                continue
            conn.sent += 1
            self.delivered += 1
            took.append(conn)
        return took

    def _advance(self, lane: Lane, sent: bool) -> None:
        if not self._router.advance(lane, sent):
            return
        if self.loop:
            completed = self._router.loops_completed
            if completed > self.loops_completed:
                self.loops_completed = completed
                # a fast loop completes hundreds of passes a second: log a few, not all
                now = time.monotonic()
                if now - self._last_pass_log >= _PASS_LOG_SECONDS:
                    self._last_pass_log = now
                    LOG.info("replay %s: pass %d complete (%d messages sent)", self.exchange, completed, self.sent)
            return
        LOG.debug("replay %s: %s exhausted", self.exchange, lane.label)
        if self._router.exhausted:
            LOG.info("replay %s: every stream sent (%d messages)", self.exchange, self.sent)
            self.exhausted.set()


def _text(data: str | bytes) -> str:
    return data if isinstance(data, str) else data.decode("utf-8", "replace")
