"""The aggregator: reads the Redis streams through a consumer group, publishes each event live,
and writes Parquet blocks to the lake. An entry is acknowledged and trimmed only after the block
holding it is durably written.

Why retries never duplicate: a block's object name is the id of its first event, and a block holds
whole stream entries, so that is always an entry's id. Entries stay in the group's pending list
until acknowledged, so after a crash the restarted aggregator re-reads its own pending entries
first, in order, and its next block starts at the same first id: the retry overwrites the object it
may already have written (with the same or more rows), never adds one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from svoe.api import DataFeed
from svoe.api.contract import (
    CONSUMER,
    GROUP,
    PAYLOAD_FIELD,
    backlog_field,
    collector_key,
    heartbeat_key,
    stats_key,
    stream_key,
)
from svoe.feedpod import metrics
from svoe.feedpod.block_writer import BlockWriter
from svoe.feedpod.live import LivePublisher, topic
from svoe.feedpod.redis_buffer import (
    MAX_ENTRY_EVENTS,
    acknowledge_block,
    buffer_streams,
    split_entry,
)

LOG = logging.getLogger(__name__)

# Events per stream per read, at most about: a read's reply and the work on it stay small enough
# that live publishing never waits long behind it.
READ_COUNT = 5000
# Entries per stream per read, at most: bounds a read that comes before the estimate of events per
# entry has risen (a burst of full entries after a quiet spell) to this many full entries.
READ_MAX_ENTRIES = 4 * READ_COUNT // MAX_ENTRY_EVENTS


@dataclass
class _Stream:
    key: str
    channel: str
    symbol: str
    topic: bytes
    # Held events (ids and payloads) and the stream entries they came in (acknowledged whole).
    ids: list[str] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    entries: list[bytes] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)  # events of each held entry
    since: float = 0.0
    failures: int = 0
    retry_at: float = 0.0


class Aggregator:
    def __init__(
        self,
        feed: DataFeed,
        client: aioredis.Redis,
        writer: BlockWriter,
        publisher: LivePublisher | None = None,
    ) -> None:
        self.feed = feed
        self.spec = feed.spec
        self.exchange = feed.spec.exchange
        self.client = client
        self.writer = writer
        self.publisher = publisher
        self.streams: dict[str, _Stream] = {}
        for ch, sym in buffer_streams(feed):
            key = stream_key(self.exchange, ch, sym)
            self.streams[key] = _Stream(key, ch, sym, topic(self.exchange, ch, sym))
        self.rows_written = 0
        self.bytes_written = 0
        self.blocks_written = 0
        self.flush_errors = 0
        self.backlog = 0
        self.last_flush_ok = True
        self._flushing: asyncio.Task[None] | None = None
        self.drained = False
        # Events per stream entry, from the last read (XREADGROUP counts entries, not events). It
        # starts at the most an entry holds, so the first read is not oversized.
        self._entry_events = float(MAX_ENTRY_EVENTS)
        self._read_ratio = 0.0
        self._must_recover = False

    # ---- redis --------------------------------------------------------------------------------
    async def _ensure_groups(self) -> None:
        for key in self.streams:
            try:
                await self.client.xgroup_create(key, GROUP, id="0", mkstream=True)
            except ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise

    def _take(self, key: Any, entries: list[tuple[Any, Any]]) -> int:
        """Hold the events of `entries` and publish each live; returns the number of events."""
        s = self.streams[key.decode() if isinstance(key, bytes) else key]
        if entries and not s.ids:
            s.since = time.monotonic()
        publish = self.publisher.publish if self.publisher is not None else None
        ids, payloads = s.ids, s.payloads
        held = len(ids)
        for entry_id, fields in entries:
            if fields is None:  # pending entry that was deleted; nothing to keep
                continue
            before = len(ids)
            for event_id, payload in split_entry(entry_id, fields[PAYLOAD_FIELD]):
                ids.append(event_id)
                payloads.append(payload)
                if publish is not None:
                    publish(s.topic, payload, event_id.encode())
            s.entries.append(entry_id)
            s.counts.append(len(ids) - before)
        n = len(ids) - held
        if n and self.publisher is not None:
            metrics.LIVE_PUBLISHED.labels(self.exchange, s.channel).inc(n)
        if n:
            self._read_ratio = max(self._read_ratio, n / len(entries))
        return n

    def _learn_entry_size(self) -> None:
        # The last read's largest events per entry of any stream, up or down at once: a reply
        # stays about READ_COUNT events per stream. A slowly decaying estimate kept reads at a
        # few entries long after a burst of full entries, and the live stream fell seconds behind.
        if self._read_ratio:
            self._entry_events, self._read_ratio = self._read_ratio, 0.0

    def _read_count(self, events: int) -> int:
        """How many entries to ask for so that about `events` events come back."""
        return max(1, min(READ_MAX_ENTRIES, int(events / self._entry_events)))

    async def _recover_pending(self) -> int:
        """Re-read this consumer's unacknowledged entries that it does not hold: all of them after a
        crash, and after a connection error the ones whose XREADGROUP reply was lost (Redis
        delivered them into the pending list, the reply never arrived, and `>` never returns them
        again). Held entries are older than any lost one, so reading resumes after the last held."""
        total = 0
        for key, s in self.streams.items():
            last: Any = s.entries[-1] if s.entries else "0"
            while True:
                res: Any = await self.client.xreadgroup(
                    GROUP, CONSUMER, {key: last}, count=self._read_count(READ_COUNT)
                )
                entries = res[0][1] if res else []
                if not entries:
                    break
                total += self._take(key, entries)
                self._learn_entry_size()
                last = entries[-1][0]
        if total:
            LOG.info("recovered %d unacknowledged entries after a restart", total)
        return total

    async def _read_new(self, block_ms: int | None) -> int:
        if self._must_recover:
            await self._recover()
        cap = self.spec.storage.flush_max_rows
        # A stream holds up to two blocks: the one being written and the next. Reading (and so
        # live publishing) goes on while a full block is written; stopping at one block stalled
        # the live stream of a busy symbol for as long as its write took (1.6 s at 10k events/s).
        hold = 2 * cap
        wanted: dict[Any, Any] = {k: ">" for k, s in self.streams.items() if len(s.ids) < hold and s.failures == 0}
        if not wanted:
            # Every buffer is full or its writes are failing: leave the backlog in Redis.
            await asyncio.sleep((block_ms or 0) / 1000 or 0.05)
            return 0
        res: Any = await self.client.xreadgroup(
            GROUP, CONSUMER, wanted, count=self._read_count(min(READ_COUNT, cap)), block=block_ms if block_ms else None
        )
        n = 0
        for key, entries in res or []:
            n += self._take(key, entries)
        self._learn_entry_size()
        return n

    # ---- flushing -----------------------------------------------------------------------------
    def _due(self, s: _Stream, now: float, draining: bool) -> bool:
        if not s.ids or now < s.retry_at:
            return False
        storage = self.spec.storage
        return draining or len(s.ids) >= storage.flush_max_rows or now - s.since >= storage.flush_interval_seconds

    async def _flush(self, s: _Stream) -> bool:
        # Reading goes on during the write; what is held now is whole entries.
        n, held = len(s.ids), len(s.entries)
        ids, payloads, entries, counts = s.ids[:n], s.payloads[:n], s.entries[:held], s.counts[:held]
        started = time.perf_counter()
        try:
            size = await self.writer.write(s.channel, self.exchange, s.symbol, ids, payloads)
        except Exception as err:
            self.flush_errors += 1
            self.last_flush_ok = False
            metrics.FLUSH_ERRORS.labels(self.exchange, s.channel).inc()
            s.failures += 1
            delay = min(0.25 * 2 ** (s.failures - 1), 30.0)
            s.retry_at = time.monotonic() + delay
            LOG.warning("flush of %s (%d rows) failed: %s; retry in %.1fs", s.key, n, err, delay)
            return False
        metrics.FLUSH_DURATION.labels(self.exchange, s.channel).observe(time.perf_counter() - started)
        metrics.FLUSH_ROWS.labels(self.exchange, s.channel).inc(n)
        metrics.FLUSH_BYTES.labels(self.exchange, s.channel).inc(size)
        await self._acknowledge(s.key, entries, counts)  # durable now
        del s.ids[:n], s.payloads[:n], s.entries[:held], s.counts[:held]
        s.since = time.monotonic()
        s.failures = 0
        s.retry_at = 0.0
        self.rows_written += n
        self.bytes_written += size
        self.blocks_written += 1
        self.last_flush_ok = True
        return True

    async def _acknowledge(self, key: str, entries: list[bytes], counts: list[int]) -> int:
        """Acknowledge a written block's entries and trim below the last one (it stays, already
        acknowledged, until the next block). Retried until Redis answers; returns the events
        newly acknowledged, which is 0 for a retry whose first try landed."""
        while True:
            try:
                return await acknowledge_block(self.client, self.exchange, key, entries, counts)
            except (RedisError, OSError) as err:
                metrics.REDIS_ERRORS.labels("aggregator", "xack").inc()
                LOG.warning("ack of %s failed (%s); retrying", key, err)
                await asyncio.sleep(0.5)

    async def _flush_due(self, draining: bool) -> None:
        """Start flushing the streams that are due, in the background: reading and live
        publishing go on while a block is encoded and written."""
        if self._flushing is not None:
            if not self._flushing.done():
                return
            self._flushing.result()  # a bug in a flush surfaces here instead of being lost
            self._flushing = None
        now = time.monotonic()
        due = [s for s in self.streams.values() if self._due(s, now, draining)]
        if due:
            self._flushing = asyncio.create_task(self._flush_all(due), name="svoe.flush")

    async def _flush_all(self, due: list[_Stream]) -> None:
        for s in due:
            await self._flush(s)

    @property
    def _flush_running(self) -> bool:
        return self._flushing is not None and not self._flushing.done()

    # ---- bookkeeping --------------------------------------------------------------------------
    async def _report(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(stats_key(self.exchange), [backlog_field(k) for k in self.streams])
        pipe.info("memory")
        backlogs, mem = await pipe.execute(raise_on_error=False)
        total = 0
        if isinstance(backlogs, list):
            for s, value in zip(self.streams.values(), backlogs, strict=True):
                backlog = int(value or 0)
                metrics.STREAM_BACKLOG.labels(self.exchange, s.channel, s.symbol).set(backlog)
                total = max(total, backlog)
        if isinstance(mem, dict):
            metrics.REDIS_USED_MEMORY.set(float(mem.get("used_memory", 0)))
            metrics.REDIS_MAXMEMORY.set(float(mem.get("maxmemory", 0)))
        self.backlog = total
        await self.client.hset(
            heartbeat_key(self.exchange),
            mapping={"beat": time.time(), "flush_ok": int(self.last_flush_ok), "backlog": total},
        )

    async def _collector_done(self) -> bool:
        state = await self.client.hget(collector_key(self.exchange), "state")
        return state in (b"stopped", None)

    # ---- main loop ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, drain_stall_timeout: float = 60.0) -> None:
        while True:
            try:
                await self._ensure_groups()
                await self._recover_pending()
                break
            except (RedisError, OSError) as err:
                metrics.REDIS_ERRORS.labels("aggregator", "connect").inc()
                LOG.warning("redis not reachable (%s); retrying", err)
                await asyncio.sleep(0.5)
        next_report = 0.0
        while not stop.is_set():
            try:
                await self._read_new(block_ms=100)
                await self._flush_due(draining=False)
                if time.monotonic() >= next_report:
                    await self._report()
                    next_report = time.monotonic() + 1.0
            except (RedisError, OSError) as err:
                metrics.REDIS_ERRORS.labels("aggregator", "read").inc()
                LOG.warning("redis error (%s); retrying", err)
                await asyncio.sleep(0.5)
                await self._reconnect_groups()
        await self._drain(drain_stall_timeout)

    async def _reconnect_groups(self) -> None:
        # After a Redis restart the group survives in the AOF; if Redis came back empty, recreate it.
        # Until recovery succeeds, no `>` read may run: entries whose reply was lost would stay
        # pending but unheld, be trimmed behind the next block, and be lost.
        self._must_recover = True
        with contextlib.suppress(RedisError, OSError):
            await self._recover()

    async def _recover(self) -> None:
        await self._ensure_groups()
        await self._recover_pending()
        self._must_recover = False

    async def _drain(self, stall_timeout: float) -> None:
        """Read and flush everything the collector wrote, until it has stopped and nothing is left.
        Gives up only when nothing has been flushed for `stall_timeout` seconds (a lake that stays
        unreachable); a large backlog drains however long it takes (the pod's grace period is the
        outer bound there)."""
        quiet_since: float | None = None
        last_rows, last_progress = self.rows_written, time.monotonic()
        while time.monotonic() - last_progress < stall_timeout:
            if self.rows_written != last_rows:
                last_rows, last_progress = self.rows_written, time.monotonic()
            try:
                n = await self._read_new(block_ms=50)
                await self._flush_due(draining=True)
                pending = sum(len(s.ids) for s in self.streams.values())
                if n == 0 and pending == 0 and not self._flush_running and await self._collector_done():
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since >= 0.2:
                        break
                else:
                    quiet_since = None
            except (RedisError, OSError) as err:
                metrics.REDIS_ERRORS.labels("aggregator", "drain").inc()
                LOG.warning("redis error while draining (%s); retrying", err)
                await asyncio.sleep(0.5)
                await self._reconnect_groups()
        if self._flushing is not None:
            await self._flushing
        left = sum(len(s.ids) for s in self.streams.values())
        reported = False
        with contextlib.suppress(RedisError, OSError):
            await self._report()
            reported = True
        self.drained = reported and left == 0 and self.backlog == 0
        if not self.drained:
            LOG.error(
                "drain incomplete: %d events buffered, backlog %s in Redis; they stay pending there",
                left,
                self.backlog if reported else "unknown (Redis unreachable)",
            )
