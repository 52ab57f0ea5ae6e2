"""Polling until something happens, for synchronous tests, e2e runs and benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for[T](probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Call `probe` every `interval` seconds until it returns something truthy, and return that.

    Raises TimeoutError naming `what` and the last value seen after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
