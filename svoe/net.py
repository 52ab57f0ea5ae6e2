"""Small networking helpers shared by `svoe run`, the benchmarks and the tests."""

from __future__ import annotations

import socket

from ephemeral_port_reserve import reserve  # type: ignore[import-untyped]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, and that the OS will not hand out again
    for about a minute: it is left in TIME_WAIT, which keeps other `bind(0)` calls (another run,
    another test worker) off it, while a server that sets SO_REUSEADDR (aiohttp, ZMQ, redis-server,
    Python's HTTP servers) can still bind it. A port that was merely free when we looked could be
    taken by the time a child process binds it."""
    return int(reserve("127.0.0.1"))


def port_free(port: int, host: str = "0.0.0.0") -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR, as the servers themselves set it,
    so that a port reserved by `free_port` or left in TIME_WAIT by the last run's connections
    counts as free; only a listener makes it busy."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
