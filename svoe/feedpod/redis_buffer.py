"""The Redis stream buffer between collector and aggregator.

Writing side (collector): events are appended to one stream per (channel, symbol) in pipelined
batches. Each entry gets an explicit, strictly increasing id chosen by the writer, which makes a
retried batch idempotent: Redis rejects an id that is not above the stream's top, so an entry that
already landed before a connection loss is never written twice. Unflushed entries are never
trimmed: under a Redis outage or a slow aggregator the writer keeps its batch, applies backpressure
to the feed, and reports the backlog instead of dropping data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from svoe.feedpod import metrics

LOG = logging.getLogger(__name__)

GROUP = "svoe-aggregator"
CONSUMER = "aggregator"
PAYLOAD_FIELD = b"d"


def stream_key(exchange: str, channel: str, symbol: str) -> str:
    return f"svoe:{exchange}:{channel}:{symbol}"


def parse_stream_key(key: str) -> tuple[str, str, str]:
    _, exchange, channel, symbol = key.split(":", 3)
    return exchange, channel, symbol


def stats_key(exchange: str) -> str:
    """Hash of running totals (collected, flushed) that `svoe run` shows as progress."""
    return f"svoe:{exchange}:stats"


def connect(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=0)


def _id_tuple(raw: bytes | str) -> tuple[int, int]:
    s = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = s.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class _Pending:
    key: str
    entry_id: str
    payload: bytes
    channel: str
    created: float


@dataclass
class StreamWriter:
    """Batches XADDs from the collector's callbacks and writes them from one background task."""

    client: aioredis.Redis
    exchange: str
    high_water: int = 20_000
    _buf: list[_Pending] = field(default_factory=list)
    _last: dict[str, tuple[int, int]] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _room: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False
    _task: asyncio.Task[None] | None = None
    written: int = 0
    redis_ok: bool = False

    async def start(self, keys: Iterable[str]) -> None:
        """Learn each stream's top id so ids keep increasing across collector restarts."""
        self._room.set()
        while True:
            try:
                pipe = self.client.pipeline(transaction=False)
                keys = list(keys)
                for k in keys:
                    pipe.xinfo_stream(k)
                res = await pipe.execute(raise_on_error=False)
                break
            except (RedisError, OSError) as err:
                metrics.REDIS_ERRORS.labels("collector", "xinfo").inc()
                LOG.warning("redis not reachable yet (%s); retrying", err)
                await asyncio.sleep(0.5)
        for k, info in zip(keys, res, strict=True):
            if isinstance(info, dict):
                self._last[k] = _id_tuple(info[b"last-generated-id"] if b"last-generated-id" in info else info["last-generated-id"])
        self.redis_ok = True
        self._task = asyncio.create_task(self._run(), name="svoe.redis-writer")

    def _next_id(self, key: str) -> str:
        now = int(time.time() * 1000)
        last = self._last.get(key)
        if last is None or now > last[0]:
            new = (now, 0)
        else:
            new = (last[0], last[1] + 1)
        self._last[key] = new
        return f"{new[0]}-{new[1]}"

    async def append(self, key: str, channel: str, payload: bytes) -> None:
        self._buf.append(_Pending(key, self._next_id(key), payload, channel, time.perf_counter()))
        self._wake.set()
        if len(self._buf) >= self.high_water:
            # Backpressure: the feed's read loop waits here, so the exchange socket fills up
            # instead of this process's memory, and nothing is dropped.
            self._room.clear()
            await self._room.wait()

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            if not self._buf:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                # Let other ready callbacks add to this batch before it goes out.
                await asyncio.sleep(0)
            batch, self._buf = self._buf, []
            try:
                await self._write(batch)
                self.redis_ok = True
                backoff = 0.05
            except (RedisError, OSError) as err:
                self.redis_ok = False
                metrics.REDIS_ERRORS.labels("collector", "xadd").inc()
                LOG.warning("redis write failed (%s); %d events kept, retrying in %.2fs", err, len(batch), backoff)
                self._buf = batch + self._buf
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if len(self._buf) < self.high_water:
                self._room.set()

    async def _write(self, batch: list[_Pending]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for p in batch:
            pipe.xadd(p.key, {PAYLOAD_FIELD: p.payload}, id=p.entry_id)
        pipe.hincrby(stats_key(self.exchange), "collected", len(batch))
        results = await pipe.execute(raise_on_error=False)
        done = time.perf_counter()
        for p, r in zip(batch, results, strict=False):
            if isinstance(r, ResponseError):
                if "equal or smaller" in str(r):
                    continue  # landed before a lost reply: the retry must not duplicate it
                raise r
            metrics.CALLBACK_TO_REDIS.labels(self.exchange, p.channel).observe(done - p.created)
        if isinstance(results[-1], Exception):
            raise results[-1]
        self.written += len(batch)

    @property
    def pending(self) -> int:
        return len(self._buf)

    async def close(self) -> None:
        """Write everything still buffered, then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
