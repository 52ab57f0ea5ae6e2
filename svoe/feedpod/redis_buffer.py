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
import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from hiredis import pack_command
from redis.exceptions import NoScriptError, RedisError, ResponseError

from svoe.api import DataFeed
from svoe.api.contract import parse_stream_key, stats_key
from svoe.feedpod import metrics
from svoe.feedpod.events import FEED_EVENTS, FEED_SYMBOL

LOG = logging.getLogger(__name__)

# The callback-to-Redis histogram observes one event in this many: a sample keeps the latency
# distribution and avoids a histogram update per event on the hot path.
LATENCY_SAMPLE_EVERY = 8

# Appends a batch: KEYS are the streams, ARGV holds (id, payload) pairs, then the stats key.
# An id at or below a stream's top means the entry landed before a lost reply; it is skipped so
# a retried batch never writes anything twice. Any other error aborts the batch (retried whole).
_APPEND_LUA = b"""
local dup = 0
for i = 1, #KEYS do
  local r = redis.pcall('XADD', KEYS[i], ARGV[2 * i - 1], 'd', ARGV[2 * i])
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'equal or smaller', 1, true) then
      dup = dup + 1
    else
      return redis.error_reply(r.err)
    end
  end
end
redis.call('HINCRBY', ARGV[#ARGV], 'collected', #KEYS - dup)
return dup
"""
_APPEND_SHA = hashlib.sha1(_APPEND_LUA).hexdigest().encode()


def buffer_streams(feed: DataFeed) -> list[tuple[str, str]]:
    """Every (channel, symbol) stream of the buffer: the feed's market data and its own events."""
    return [*feed.streams(), (FEED_EVENTS, FEED_SYMBOL)]


def connect(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=0)


async def raw_pipeline(client: aioredis.Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send commands in one round trip, packed by hiredis, and return the replies (an error reply
    comes back as its exception, in place). redis-py packs arguments in pure Python, which costs
    milliseconds for a command with thousands of ids (an XACK of a whole block)."""
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    replies: list[Any] = []
    try:
        await conn.send_packed_command([pack_command(c) for c in commands], check_health=False)
        for _ in commands:
            try:
                replies.append(await conn.read_response(disable_decoding=True))
            except ResponseError as err:
                replies.append(err)
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
    return replies


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
    high_water: int = 10_000
    max_batch: int = 2_000
    _buf: list[_Pending] = field(default_factory=list)
    _last: dict[str, tuple[int, int]] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _room: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False
    _task: asyncio.Task[None] | None = None
    written: int = 0
    redis_ok: bool = False
    _latency_children: dict[str, Any] = field(default_factory=dict)
    _series_children: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    # Market-data events written to Redis per stream, and the wall time the newest of them was
    # appended (read by /stats). The feed's own events are not counted.
    stream_events: dict[str, int] = field(default_factory=dict)
    stream_last: dict[str, float] = field(default_factory=dict)
    events: int = 0
    # Called with True when backpressure starts and False when it ends (a feed event).
    on_backpressure: Any = None

    @property
    def stats_key(self) -> str:
        return stats_key(self.exchange)

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
                self._last[k] = _id_tuple(
                    info[b"last-generated-id"] if b"last-generated-id" in info else info["last-generated-id"]
                )
        self.redis_ok = True
        self._task = asyncio.create_task(self._run(), name="svoe.redis-writer")

    def _next_id(self, key: str) -> str:
        now = int(time.time() * 1000)
        last = self._last.get(key)
        new = (now, 0) if last is None or now > last[0] else (last[0], last[1] + 1)
        self._last[key] = new
        return f"{new[0]}-{new[1]}"

    async def append(self, key: str, channel: str, payload: bytes) -> None:
        self._buf.append(_Pending(key, self._next_id(key), payload, channel, time.perf_counter()))
        self._wake.set()
        if len(self._buf) >= self.high_water:
            # Backpressure: the feed's read loop waits here, so the exchange socket fills up
            # instead of this process's memory, and nothing is dropped.
            if self._room.is_set() and self.on_backpressure is not None:
                self.on_backpressure(True)
            self._room.clear()
            await self._room.wait()

    def append_nowait(self, key: str, channel: str, payload: bytes) -> None:
        """Append without waiting for room: for the feed's own rare events, which must not block
        (they are recorded from logging handlers and from inside backpressure itself)."""
        self._buf.append(_Pending(key, self._next_id(key), payload, channel, time.perf_counter()))
        self._wake.set()

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
            # Bounded pipelines keep the writer's transient memory flat under a burst.
            batch, self._buf = self._buf[: self.max_batch], self._buf[self.max_batch :]
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
                if not self._room.is_set() and self.on_backpressure is not None:
                    self.on_backpressure(False)
                self._room.set()

    async def _write(self, batch: list[_Pending]) -> None:
        # The whole batch is one EVALSHA packed by hiredis: one command and one reply per batch.
        # Per-entry XADDs through redis-py's pure-Python packing and reply parsing were the
        # collector's largest cost per event in a profile (docs/performance.md).
        args: list[bytes | str | int] = [b"EVALSHA", _APPEND_SHA, len(batch)]
        args.extend(p.key for p in batch)
        for p in batch:
            args.append(p.entry_id)
            args.append(p.payload)
        args.append(self.stats_key)
        evalsha = tuple(args)
        reply = (await raw_pipeline(self.client, [evalsha]))[0]
        if isinstance(reply, NoScriptError):
            reply = (await raw_pipeline(self.client, [(b"SCRIPT", b"LOAD", _APPEND_LUA), evalsha]))[1]
        if isinstance(reply, Exception):
            raise reply
        done = time.perf_counter()
        for i in range(0, len(batch), LATENCY_SAMPLE_EVERY):
            p = batch[i]
            self._latency(p.channel).observe(done - p.created)
        self.written += len(batch)
        self._count(batch)

    def _count(self, batch: list[_Pending]) -> None:
        """Per-stream event counts and last-event time, updated once per batch: a metric update
        per event was a measurable share of the collector's cost per event."""
        per_key: dict[str, int] = {}
        for p in batch:
            if p.channel != FEED_EVENTS:  # the feed's own events are not market data
                per_key[p.key] = per_key.get(p.key, 0) + 1
        # Each stream's newest entry, found from the batch's end: a few steps, not one per event.
        newest: dict[str, float] = {}
        for p in reversed(batch):
            if p.key in per_key and p.key not in newest:
                newest[p.key] = p.created
                if len(newest) == len(per_key):
                    break
        now = time.time()
        # `created` is perf_counter at append, microseconds after cryptofeed's receipt timestamp;
        # one offset per batch turns it into wall time without a clock call per event.
        to_wall = now - time.perf_counter()
        counts = self.stream_events
        for key, n in per_key.items():
            events, last = self._series(key)
            events.inc(n)
            last.set(now)
            counts[key] = counts.get(key, 0) + n
            self.stream_last[key] = newest[key] + to_wall
            self.events += n

    def _series(self, key: str) -> tuple[Any, Any]:
        hit = self._series_children.get(key)
        if hit is None:
            exchange, channel, symbol = parse_stream_key(key)
            hit = self._series_children[key] = (
                metrics.EVENTS.labels(exchange, channel, symbol),
                metrics.LAST_EVENT.labels(exchange, channel, symbol),
            )
        return hit

    def _latency(self, channel: str) -> Any:
        child = self._latency_children.get(channel)
        if child is None:
            child = self._latency_children[channel] = metrics.CALLBACK_TO_REDIS.labels(self.exchange, channel)
        return child

    @property
    def pending(self) -> int:
        return len(self._buf)

    async def close(self) -> None:
        """Write everything still buffered, then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
