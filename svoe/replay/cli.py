"""``svoe replay serve``: the replay exchange as a standalone process."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from contextlib import suppress
from typing import Any, TextIO

from svoe.replay.capture import REFERENCE_FEED_OPTIONS, CaptureError, capture_subscription
from svoe.replay.faults import Faults
from svoe.replay.sequencing import LoopNotSupported
from svoe.replay.server import ReplayServer

LOG = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
_PROGRESS_SECONDS = 10.0


def serve_main(
    capture_dir: str,
    exchange: str,
    host: str,
    port: int,
    speed: float | None,
    loop: bool,
    out: TextIO | None = None,
    faults: Faults | None = None,
    **options: Any,
) -> int:
    """Serve ``exchange`` from ``capture_dir`` until Ctrl-C/SIGTERM. Exit 0, or 2 on bad input.

    options: more keyword arguments of :class:`ReplayServer` (clients, cert_file, key_file).
    """
    stream = out if out is not None else sys.stdout
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server = ReplayServer(capture_dir, exchange, speed, loop, host, port, faults=faults, **options)
    except LoopNotSupported as exc:
        print(f"svoe replay serve: --loop: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (CaptureError, ValueError) as exc:
        print(f"svoe replay serve: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return asyncio.run(_serve(server, capture_dir, stream))
    except OSError as exc:
        # typically the port is taken
        print(f"svoe replay serve: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


async def _serve(server: ReplayServer, capture_dir: str, out: TextIO) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        try:
            subscription: dict[str, list[str]] | str = capture_subscription(capture_dir, server.exchange)
        except CaptureError as exc:
            subscription = f"unknown ({exc})"
        out.write(
            f"replaying {server.exchange} from {capture_dir}\n"
            f"  websocket base: {server.ws_base}\n"
            f"  rest base:      {server.rest_base}\n"
            f"  CA file:        {server.ca_file}\n"
            f"  subscription:   {subscription}\n"
            f"  feed options:   {REFERENCE_FEED_OPTIONS} (those of the captures' reference counts)\n"
            f"  speed: {'as fast as possible' if server.speed is None else f'{server.speed}x real time'}"
            f"{', looping' if server.loop else ''}\n"
            "Ctrl-C to stop.\n"
        )
        out.flush()
        exhausted_reported = False
        while not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _PROGRESS_SECONDS)
            stats = server.stats()
            LOG.info(
                "replay %s: %d message(s) sent, %d pass(es) complete, %d connection(s) open, %d REST answer(s)",
                server.exchange,
                stats["sent"],
                stats["loops_completed"],
                stats["connections_open"],
                stats["rest_served"],
            )
            if server.exhausted.is_set() and not exhausted_reported:
                exhausted_reported = True
                out.write("capture exhausted: every stream sent; connections stay open until Ctrl-C\n")
                out.flush()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop()
    out.write(f"stopped after {server.sent} message(s)\n")
    return 0
