"""The Redis stream buffer between collector and aggregator.

Writing side (collector): events are appended to one stream per (channel, symbol) in pipelined
batches. Consecutive events of one stream share one stream entry (newline-joined payloads): the
per-entry costs of Redis, of reading and of acknowledging are paid once per entry, not per event.
An event's id is its entry's id plus its index (`ms-(seq+i)`): the writer reserves a run of ids per
entry, so every event keeps a unique, strictly increasing id, as the lake's `svoe_id` records.

The writer chooses the ids itself, which makes a retried batch idempotent: Redis rejects an id that
is not above the stream's top, so an entry that already landed before a connection loss is never
written twice. Unflushed entries are never trimmed: under a Redis outage or a slow aggregator the
writer keeps its batch, applies backpressure to the feed, and reports the backlog instead of
dropping data.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from hiredis import pack_command
from redis.exceptions import NoScriptError, RedisError, ResponseError

from svoe.api import DataFeed
from svoe.api.contract import (
    BACKLOG_FIELD_PREFIX,
    GROUP,
    PAYLOAD_FIELD,
    backlog_field,
    parse_stream_key,
    stats_key,
)
from svoe.feedpod import metrics
from svoe.feedpod.events import FEED_EVENTS, FEED_SYMBOL

LOG = logging.getLogger(__name__)

# The callback-to-Redis histogram observes one event in this many, and the first (oldest) of
# every entry: a sample keeps the latency distribution, and an observe costs about 3 us in
# Prometheus' multiprocess mode (2026-12-03). One in 32 is still about 600 samples a second at
# full speed, and a quiet stream, whose entries hold one event, is sampled in full.
LATENCY_SAMPLE_EVERY = 32

# Events per stream entry at most. The aggregator flushes whole entries (a block never splits
# one, so a retried block starts at the same id), so this also bounds how far past flushMaxRows a
# block can grow; the collector lowers it to flushMaxRows when that is smaller.
MAX_ENTRY_EVENTS = 500

# Appends a batch: KEYS are the streams; ARGV holds the payload field, the stats key and the
# backlog field prefix, then (id, payload, events) per entry. An id at or below a stream's top
# means the entry landed before a lost reply; it is skipped so a retried batch never writes
# anything twice. Any other error aborts the batch (retried whole; what landed is skipped then).
_APPEND_LUA = b"""
local field, stats, prefix = ARGV[1], ARGV[2], ARGV[3]
local dup = 0
for i = 1, #KEYS do
  local j = 3 * i + 1
  local r = redis.pcall('XADD', KEYS[i], ARGV[j], field, ARGV[j + 1])
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'equal or smaller', 1, true) then
      dup = dup + 1
    else
      return redis.error_reply(r.err)
    end
  else
    local n = tonumber(ARGV[j + 2])
    redis.call('HINCRBY', stats, 'collected', n)
    redis.call('HINCRBY', stats, prefix .. KEYS[i], n)
  end
end
return dup
"""
_APPEND_SHA = hashlib.sha1(_APPEND_LUA).hexdigest().encode()

# Acknowledges a written block: KEYS are the stream and the stats key; ARGV holds the group, the
# flushed and backlog fields and the id to trim below, then (entry id, events) per entry. Only the
# events of entries this call acknowledged are counted: a retry after a lost reply (the script
# ran, its answer never arrived) finds them acknowledged, and the counters do not move twice.
_ACK_LUA = b"""
local group, flushed, backlog, minid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local n = 0
for i = 5, #ARGV, 2 do
  n = n + redis.call('XACK', KEYS[1], group, ARGV[i]) * tonumber(ARGV[i + 1])
end
redis.call('XTRIM', KEYS[1], 'MINID', minid)
if n > 0 then
  redis.call('HINCRBY', KEYS[2], flushed, n)
  redis.call('HINCRBY', KEYS[2], backlog, -n)
end
return n
"""
_ACK_SHA = hashlib.sha1(_ACK_LUA).hexdigest().encode()

EVENT_SEPARATOR = b"\n"  # never inside an event: JSON escapes newlines in strings


def split_entry(entry_id: bytes | str, payload: bytes) -> Iterator[tuple[str, bytes]]:
    """The events of one stream entry with their ids (`ms-(seq+i)`)."""
    ms, seq = _id_tuple(entry_id)
    for i, event in enumerate(payload.split(EVENT_SEPARATOR)):
        yield f"{ms}-{seq + i}", event


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


async def run_script(client: aioredis.Redis, script: bytes, sha: bytes, args: list[Any]) -> Any:
    """EVALSHA of `script` (loaded first when this Redis has not seen it: a restart forgets it),
    in one round trip packed by hiredis; an error reply is raised."""
    evalsha = (b"EVALSHA", sha, *args)
    reply = (await raw_pipeline(client, [evalsha]))[0]
    if isinstance(reply, NoScriptError):
        reply = (await raw_pipeline(client, [(b"SCRIPT", b"LOAD", script), evalsha]))[1]
    if isinstance(reply, Exception):
        raise reply
    return reply


async def acknowledge_block(
    client: aioredis.Redis, exchange: str, key: str, entries: list[bytes], counts: list[int]
) -> int:
    """Acknowledge a written block's entries (with their event counts) and trim the stream below
    the last one; returns the events newly acknowledged (0 for a retry whose first try landed)."""
    args: list[Any] = [2, key, stats_key(exchange), GROUP, b"flushed", backlog_field(key), entries[-1]]
    for entry, count in zip(entries, counts, strict=True):
        args += (entry, count)
    return int(await run_script(client, _ACK_LUA, _ACK_SHA, args))


def _id_tuple(raw: bytes | str) -> tuple[int, int]:
    s = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = s.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class _Pending:
    """One event waiting for its batch."""

    key: str
    payload: bytes
    channel: str
    created: float


@dataclass
class _Entry:
    """Consecutive events of one stream, written as one stream entry under `entry_id`."""

    key: str
    entry_id: str
    events: list[_Pending]


@dataclass
class StreamWriter:
    """Batches events from the collector's callbacks and writes them from one background task."""

    client: aioredis.Redis
    exchange: str
    high_water: int = 10_000
    max_batch: int = 2_000
    max_entry_events: int = MAX_ENTRY_EVENTS
    # The feed's read loop yields to the event loop at least this often (seconds). websockets
    # queues up to 1,024 messages (cryptofeed's max_queue) and hands out queued ones without
    # suspending, so a collector catching up starved this writer for the whole queue: 0.7-1.7 s
    # from receipt to Redis at 10k events/s. By time, not count, so batches stay large at speed.
    yield_interval: float = 0.005
    _yield_at: float = 0.0
    _buf: list[_Pending] = field(default_factory=list)
    # Entries of a failed write, with their ids fixed: a retry must reuse them to be idempotent.
    _retry: list[_Entry] = field(default_factory=list)
    _retry_events: int = 0
    _last: dict[str, tuple[int, int]] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _room: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False
    _task: asyncio.Task[None] | None = None
    written: int = 0
    entries_written: int = 0
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
                ms, _ = _id_tuple(
                    info[b"last-generated-id"] if b"last-generated-id" in info else info["last-generated-id"]
                )
                # The top entry's events took ids after its own; the next millisecond is above all.
                self._last[k] = (ms + 1, -1)
        self.redis_ok = True
        self._yield_at = time.perf_counter() + self.yield_interval
        self._task = asyncio.create_task(self._run(), name="svoe.redis-writer")

    def _entries(self, batch: list[_Pending]) -> list[_Entry]:
        """Group a batch into entries per stream, in order, reserving each entry's run of ids."""
        per_key: dict[str, list[_Pending]] = {}
        for p in batch:
            events = per_key.get(p.key)
            if events is None:
                per_key[p.key] = [p]
            else:
                events.append(p)
        now = int(time.time() * 1000)
        size = self.max_entry_events
        out: list[_Entry] = []
        for key, events in per_key.items():
            for i in range(0, len(events), size):
                chunk = events[i : i + size]
                last = self._last.get(key)
                ms, seq = (now, 0) if last is None or now > last[0] else (last[0], last[1] + 1)
                self._last[key] = (ms, seq + len(chunk) - 1)
                out.append(_Entry(key, f"{ms}-{seq}", chunk))
        return out

    def _append(self, key: str, channel: str, payload: bytes) -> float:
        now = time.perf_counter()
        self._buf.append(_Pending(key, payload, channel, now))
        self._wake.set()
        return now

    async def append(self, key: str, channel: str, payload: bytes) -> None:
        now = self._append(key, channel, payload)
        if len(self._buf) + self._retry_events >= self.high_water:
            # Backpressure: the feed's read loop waits here, so the exchange socket fills up
            # instead of this process's memory, and nothing is dropped.
            if self._room.is_set() and self.on_backpressure is not None:
                self.on_backpressure(True)
            self._room.clear()
            await self._room.wait()
        elif now >= self._yield_at:
            self._yield_at = now + self.yield_interval
            await asyncio.sleep(0)

    def append_nowait(self, key: str, channel: str, payload: bytes) -> None:
        """Append without waiting for room: for the feed's own rare events, which must not block
        (they are recorded from logging handlers and from inside backpressure itself)."""
        self._append(key, channel, payload)

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            if not self._buf and not self._retry:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                # Let other ready callbacks add to this batch before it goes out.
                await asyncio.sleep(0)
            if self._retry:
                entries, self._retry, self._retry_events = self._retry, [], 0
            else:
                # Bounded pipelines keep the writer's transient memory flat under a burst.
                batch, self._buf = self._buf[: self.max_batch], self._buf[self.max_batch :]
                entries = self._entries(batch)
            try:
                await self._write(entries)
                self.redis_ok = True
                backoff = 0.05
            except (RedisError, OSError) as err:
                self.redis_ok = False
                metrics.REDIS_ERRORS.labels("collector", "xadd").inc()
                self._retry, self._retry_events = entries, sum(len(e.events) for e in entries)
                LOG.warning("redis write failed (%s); %d events kept, retrying in %.2fs", err, self.pending, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if len(self._buf) < self.high_water:
                if not self._room.is_set() and self.on_backpressure is not None:
                    self.on_backpressure(False)
                self._room.set()

    async def _write(self, entries: list[_Entry]) -> None:
        # The whole batch is one EVALSHA packed by hiredis: one command and one reply per batch.
        # Per-entry XADDs through redis-py's pure-Python packing and reply parsing were the
        # collector's largest cost per event in a profile (docs/performance.md).
        args: list[Any] = [len(entries)]
        args.extend(e.key for e in entries)
        args.extend((PAYLOAD_FIELD, self.stats_key, BACKLOG_FIELD_PREFIX))
        for e in entries:
            args.append(e.entry_id)
            args.append(EVENT_SEPARATOR.join([p.payload for p in e.events]))
            args.append(len(e.events))
        await run_script(self.client, _APPEND_LUA, _APPEND_SHA, args)
        done = time.perf_counter()
        for e in entries:
            for p in e.events[::LATENCY_SAMPLE_EVERY]:
                self._latency(p.channel).observe(done - p.created)
        self.written += sum(len(e.events) for e in entries)
        self.entries_written += len(entries)
        self._count(entries)

    def _count(self, entries: list[_Entry]) -> None:
        """Per-stream event counts and last-event time, updated once per batch: a metric update
        per event was a measurable share of the collector's cost per event."""
        per_key: dict[str, int] = {}
        newest: dict[str, float] = {}
        for e in entries:
            if e.events[0].channel != FEED_EVENTS:  # the feed's own events are not market data
                per_key[e.key] = per_key.get(e.key, 0) + len(e.events)
                newest[e.key] = e.events[-1].created  # entries of a stream are in order
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
        return len(self._buf) + self._retry_events

    async def close(self) -> None:
        """Write everything still buffered, then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
