"""The Redis buffer against a real redis-server: many events per stream entry, each with its own
id; retried batches and restarted writers never reuse an id; the aggregator acknowledges whole
entries only after the block holding them is in the lake."""

from __future__ import annotations

import asyncio
import time
import types
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from svoe.api.contract import GROUP, PAYLOAD_FIELD, backlog_field, stats_key, stream_key
from svoe.api.load import parse_manifest
from svoe.feedpod import redis_buffer
from svoe.feedpod.aggregator import Aggregator
from svoe.feedpod.block_writer import BlockWriter
from svoe.feedpod.redis_buffer import StreamWriter, connect, split_entry
from tests.conftest import RedisProc

KEY = stream_key("X", "trades", "BTC-USDT")


def _feed(lake: Path, max_rows: int = 1000) -> Any:
    return parse_manifest(
        {
            "apiVersion": "svoe.io/v1alpha1",
            "kind": "DataFeed",
            "metadata": {"name": "buf"},
            "spec": {
                "exchange": "BINANCE",
                "channels": ["trades"],
                "symbols": ["BTC-USDT"],
                "storage": {"lake": str(lake), "flushMaxRows": max_rows, "flushIntervalSeconds": 3600},
            },
        }
    )


async def _write(url: str, payloads: list[bytes], entry_events: int = 4) -> StreamWriter:
    w = StreamWriter(connect(url), "X", max_entry_events=entry_events)
    await w.start([KEY])
    for p in payloads:
        await w.append(KEY, "trades", p)
    await w.close()
    return w


def _events(url: str) -> list[tuple[str, bytes]]:
    import redis

    r = redis.Redis.from_url(url)
    return [e for entry_id, fields in r.xrange(KEY) for e in split_entry(entry_id, fields[PAYLOAD_FIELD])]


def test_events_share_entries_and_keep_their_own_increasing_ids(redis_proc: RedisProc) -> None:
    payloads = [b'["e%d"]' % i for i in range(10)]
    w = asyncio.run(_write(redis_proc.url, payloads))
    import redis

    r = redis.Redis.from_url(redis_proc.url)
    assert r.xlen(KEY) == w.entries_written and 3 <= w.entries_written < 10  # at most 4 per entry
    events = _events(redis_proc.url)
    assert [p for _, p in events] == payloads
    ids = [tuple(map(int, i.split("-"))) for i, _ in events]
    assert ids == sorted(set(ids))  # unique and strictly increasing
    assert int(r.hget(stats_key("X"), "collected")) == 10
    assert int(r.hget(stats_key("X"), backlog_field(KEY))) == 10


def test_a_restarted_writer_in_the_same_millisecond_reuses_no_id(
    redis_proc: RedisProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A frozen clock: both writers run "in one millisecond", the case where the next entry id
    # would fall inside the top entry's run of event ids.
    frozen = types.SimpleNamespace(time=lambda: 1_700_000_000.0, perf_counter=time.perf_counter)
    monkeypatch.setattr(redis_buffer, "time", frozen)
    asyncio.run(_write(redis_proc.url, [b"[1]", b"[2]", b"[3]"]))
    asyncio.run(_write(redis_proc.url, [b"[4]", b"[5]"]))
    ids = [i for i, _ in _events(redis_proc.url)]
    assert len(ids) == len(set(ids)) == 5


def test_a_feed_that_never_suspends_still_lets_the_writer_write(redis_proc: RedisProc) -> None:
    """cryptofeed hands out queued websocket messages without suspending: the appends themselves
    must yield, or nothing reaches Redis until the queue is empty."""

    async def run() -> tuple[int, int, int]:
        # A high-water mark far above what one Redis round trip takes to overlap, so that a
        # loaded machine cannot make a working yield look like backpressure.
        w = StreamWriter(connect(redis_proc.url), "X", yield_interval=0.0, high_water=1_000_000)
        await w.start([KEY])
        appended = 0
        while w.written == 0:  # a catching-up feed: no await but append
            await w.append(KEY, "trades", b"[%d]" % appended)
            appended += 1
        await w.close()
        return appended, w.written, w.high_water

    appended, written, high_water = asyncio.run(run())
    # Without the yield, only backpressure at the high-water mark would let the writer run.
    assert appended < high_water // 10
    assert written == appended


def test_a_retried_batch_writes_nothing_twice(redis_proc: RedisProc) -> None:
    async def run() -> tuple[int, int]:
        w = StreamWriter(connect(redis_proc.url), "X", max_entry_events=2)
        await w.start([KEY])
        entries = w._entries([redis_buffer._Pending(KEY, b"[%d]" % i, "trades", 0.0) for i in range(5)])
        await w._write(entries)
        await w._write(entries)  # the reply was lost: the same entries, same ids, once more
        r = w.client
        collected = int(await r.hget(stats_key("X"), "collected"))
        return collected, int(await r.xlen(KEY))

    assert asyncio.run(run()) == (5, 3)
    assert len(_events(redis_proc.url)) == 5


def test_aggregator_stores_every_event_and_acknowledges_whole_entries(redis_proc: RedisProc, tmp_path: Path) -> None:
    feed = _feed(tmp_path / "lake")
    key = stream_key("BINANCE", "trades", "BTC-USDT")
    trade = b'[1.5,1.6,"buy","0.1","100.5","t%d","limit"]'

    written: list[str] = []

    async def run() -> tuple[int, int, int]:
        w = StreamWriter(connect(redis_proc.url), "BINANCE", max_entry_events=7)
        await w.start([key])
        for i in range(50):
            await w.append(key, "trades", trade % i)
        await w.close()
        for entry_id, fields in await w.client.xrange(key):
            written.extend(i for i, _ in split_entry(entry_id, fields[PAYLOAD_FIELD]))
        writer = BlockWriter(feed.spec.storage, "w1")
        agg = Aggregator(feed, connect(redis_proc.url), writer)
        await agg._ensure_groups()
        while await agg._read_new(block_ms=None):
            pass
        await agg._flush_due(draining=True)
        assert agg._flushing is not None
        await agg._flushing
        writer.close()
        await agg._report()
        pending = (await agg.client.xpending(key, GROUP))["pending"]
        return agg.rows_written, pending, agg.backlog

    assert asyncio.run(run()) == (50, 0, 0)
    table = pq.read_table(next((tmp_path / "lake").rglob("*.parquet")))
    assert table.column("id").to_pylist() == [f"t{i}" for i in range(50)]
    assert table.column("svoe_id").to_pylist() == written
    seqs = list(zip(table.column("svoe_ms").to_pylist(), table.column("svoe_seq").to_pylist(), strict=True))
    assert seqs == sorted(set(seqs))
    import redis

    assert redis.Redis.from_url(redis_proc.url).xlen(key) == 1  # trimmed to the top entry, acknowledged


def test_an_acknowledgement_retried_after_a_lost_reply_counts_its_block_once(
    redis_proc: RedisProc, tmp_path: Path
) -> None:
    """The ack landed but its reply did not arrive: the retry must leave flushed and the backlog
    as they are, or the backlog metric drifts below zero and `svoe run` reports rows twice."""
    feed = _feed(tmp_path / "lake")
    key = stream_key("BINANCE", "trades", "BTC-USDT")
    trade = b'[1.5,1.6,"buy","0.1","100.5","t%d","limit"]'

    async def run() -> tuple[list[int], int, int, int]:
        w = StreamWriter(connect(redis_proc.url), "BINANCE", max_entry_events=7)
        await w.start([key])
        for i in range(30):
            await w.append(key, "trades", trade % i)
        await w.close()
        agg = Aggregator(feed, connect(redis_proc.url), BlockWriter(feed.spec.storage, "w1"))
        s = agg.streams[key]
        await agg._ensure_groups()
        while await agg._read_new(block_ms=None):
            pass
        acked = [await agg._acknowledge(key, s.entries, s.counts) for _ in range(2)]
        r = agg.client
        stats = await r.hgetall(stats_key("BINANCE"))
        pending = (await r.xpending(key, GROUP))["pending"]
        return acked, int(stats[b"flushed"]), int(stats[backlog_field(key).encode()]), pending

    acked, flushed, backlog, pending = asyncio.run(run())
    assert acked == [30, 0]
    assert (flushed, backlog, pending) == (30, 0, 0)


def test_aggregator_keeps_reading_while_a_full_block_is_written(redis_proc: RedisProc, tmp_path: Path) -> None:
    """A stream holds up to two blocks: reading (and so the live stream) goes on while its full
    block is written, and stops at the second block until the first is durable."""
    cap = 20
    feed = _feed(tmp_path / "lake", max_rows=cap)
    key = stream_key("BINANCE", "trades", "BTC-USDT")
    trade = b'[1.5,1.6,"buy","0.1","100.5","t%d","limit"]'

    class HeldWriter(BlockWriter):
        """The real block writer, whose first write waits until the test lets it go on."""

        release = asyncio.Event()

        async def write(self, *args: Any) -> int:
            await self.release.wait()
            return await super().write(*args)

    async def run() -> tuple[int, int, int, int]:
        # Never yielding, the appends go out as one batch: entries of 5 events each.
        w = StreamWriter(connect(redis_proc.url), "BINANCE", max_entry_events=5, yield_interval=float("inf"))
        await w.start([key])
        for i in range(3 * cap):  # three blocks' worth in Redis
            await w.append(key, "trades", trade % i)
        await w.close()
        writer = HeldWriter(feed.spec.storage, "w1")
        agg = Aggregator(feed, connect(redis_proc.url), writer)
        s = agg.streams[key]
        await agg._ensure_groups()
        while len(s.ids) < cap:
            await agg._read_new(block_ms=None)
        await agg._flush_due(draining=False)
        assert agg._flush_running
        for _ in range(10):  # the block is being written: reading goes on, up to two blocks
            await agg._read_new(block_ms=None)
        held_during_write = len(s.ids)
        writer.release.set()
        # Until everything is written, as the aggregator's own loop would: "nothing held and no
        # write running" can hold for a moment while Redis still has unread entries.
        deadline = time.monotonic() + 60
        while (agg._flush_running or s.ids or agg.rows_written < 3 * cap) and time.monotonic() < deadline:
            await agg._read_new(block_ms=None)
            await agg._flush_due(draining=True)
            await asyncio.sleep(0.01)
        writer.close()
        pending = (await agg.client.xpending(key, GROUP))["pending"]
        return held_during_write, agg.rows_written, agg.blocks_written, pending

    held, rows, blocks, pending = asyncio.run(run())
    # Past one block while it is written; stopped near two (one read may overshoot) with a third waiting.
    assert cap < held < 3 * cap
    assert (rows, pending) == (3 * cap, 0)
    assert blocks >= 2
    files = list((tmp_path / "lake").rglob("*.parquet"))
    ids = [i for f in files for i in pq.read_table(f).column("id").to_pylist()]
    assert sorted(ids) == sorted(f"t{i}" for i in range(3 * cap))
