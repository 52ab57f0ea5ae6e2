"""`svoe run` stops a child only once it has started: a SIGTERM before the child's signal handlers
exist kills it outright, and an aggregator killed so has flushed nothing to the lake."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from svoe.feedpod import redis_buffer
from svoe.feedpod.local_run import _until_started
from tests.conftest import RedisProc

# A child that takes a while to start (imports on a slow machine), then writes its heartbeat.
_SLOW_START = (
    "import sys, time, redis\n"
    "time.sleep(1.5)\n"
    "redis.Redis.from_url(sys.argv[1]).hset('hb', 'beat', time.time())\n"
    "time.sleep(30)\n"
)


def test_waits_for_the_first_heartbeat_after_spawn(redis_proc: RedisProc) -> None:
    async def run() -> float:
        client = redis_buffer.connect(redis_proc.url)
        await client.hset("hb", "beat", 1.0)  # a previous run's heartbeat does not count
        spawned = time.time()
        child = subprocess.Popen([sys.executable, "-c", _SLOW_START, redis_proc.url])
        try:
            t = time.monotonic()
            await _until_started(client, child, "hb", "beat", spawned, timeout=30)
            return time.monotonic() - t
        finally:
            child.kill()
            child.wait()
            await client.aclose()

    assert asyncio.run(run()) >= 1.4


def test_a_child_that_exits_is_not_waited_for(redis_proc: RedisProc) -> None:
    async def run() -> float:
        client = redis_buffer.connect(redis_proc.url)
        child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
        child.wait()
        t = time.monotonic()
        await _until_started(client, child, "hb", "beat", time.time(), timeout=30)
        await client.aclose()
        return time.monotonic() - t

    assert asyncio.run(run()) < 1.0
