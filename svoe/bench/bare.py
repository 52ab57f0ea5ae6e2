"""cryptofeed without svoe, in a child process, so its CPU and RSS are its own.

`kind` says what stands behind cryptofeed's no-op callback:
  cryptofeed_bare           nothing
  cryptofeed_redis_backend  cryptofeed's own Redis stream backend (as upstream cryptostore uses it)
  cryptofeed_zmq_backend    cryptofeed's own ZMQ backend, every update published (the live peer)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from svoe.bench.rig import CHANNEL


def run_cryptofeed(kind: str, exchange: str, endpoints: dict[str, str], symbols: list[str], seconds: float,
                   target: str | None, cache_dir: str) -> dict[str, Any]:  # fmt: skip
    """Run one configuration for `seconds` against the replay at `endpoints`. `target` is the
    backend's Redis socket or ZMQ port."""
    payload = json.dumps([kind, exchange, endpoints, symbols, time.time() + seconds, target])
    out = subprocess.run(
        [sys.executable, "-m", "svoe.bench.bare", "--worker", payload],
        capture_output=True, text=True, env={**os.environ, "XDG_CACHE_HOME": cache_dir}, timeout=seconds + 120,
        check=True,
    )  # fmt: skip
    res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return res


def _worker(kind: str, exchange: str, endpoints: dict[str, str], symbols: list[str], deadline: float,
            target: str | None) -> dict[str, Any]:  # fmt: skip
    """Runs until the wall-clock `deadline` the parent set at spawn time; reports the events and
    CPU seconds at that moment, so start-up counts the same in every configuration and shutdown
    in none."""
    from svoe.exchanges.endpoints import redirected_feed_class
    from svoe.replay import REFERENCE_FEED_OPTIONS

    cls = redirected_feed_class(exchange, endpoints["websocket"], endpoints["rest"], endpoints["caFile"])
    count = 0

    first_cpu = 0.0

    async def noop(book: Any, ts: float) -> None:
        nonlocal count, first_cpu
        count += 1
        if count == 1:  # start-up ends here; what follows is the cost per event
            ru = resource.getrusage(resource.RUSAGE_SELF)
            first_cpu = ru.ru_utime + ru.ru_stime

    callbacks: list[Any] = [noop]
    if kind == "cryptofeed_redis_backend":
        from cryptofeed.backends.redis import BookStream

        # cryptofeed builds the URL from `host` when `socket` is set
        callbacks.append(BookStream(host=target, socket=True))  # type: ignore[no-untyped-call]
    elif kind == "cryptofeed_zmq_backend":
        from cryptofeed.backends.zmq import BookZMQ

        callbacks.append(BookZMQ(host="127.0.0.1", port=int(target or 0), snapshot_interval=10**9))  # type: ignore[no-untyped-call]

    result: dict[str, Any] = {}

    async def run() -> None:
        feed = cls(channels=[CHANNEL], symbols=symbols, callbacks={CHANNEL: callbacks}, **REFERENCE_FEED_OPTIONS)
        stop = asyncio.Event()
        task = asyncio.create_task(feed.run(stop))
        await asyncio.sleep(max(0.0, deadline - time.time()))
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu = ru.ru_utime + ru.ru_stime
        result.update(events=count, cpu=cpu, rss_max_kb=ru.ru_maxrss)
        result["cpu_s_per_million"] = (cpu - first_cpu) / max(count - 1, 1) * 1e6
        stop.set()
        await asyncio.wait_for(task, 60)

    asyncio.run(run())
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", required=True)
    a = p.parse_args()
    kind, exchange, endpoints, symbols, deadline, target = json.loads(a.worker)
    print(json.dumps(_worker(kind, exchange, endpoints, symbols, deadline, target)))


if __name__ == "__main__":
    main()
