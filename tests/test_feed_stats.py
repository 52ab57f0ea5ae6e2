"""The pure parts of the collector's /stats: the sampled rate, the gap window, the backlog from
XINFO GROUPS replies and the document, each with an injected clock."""

from __future__ import annotations

from svoe.feedpod.stats import (
    GapWindow,
    RateWindow,
    backlog_total,
    count_since,
    events_per_second,
    rfc3339,
    stats_document,
)


def test_rate_since_start_while_younger_than_the_window() -> None:
    rate = RateWindow()
    rate.sample(100.0, 0)
    for t in range(1, 11):
        rate.sample(100.0 + t, 50 * t)
    assert rate.rate(110.0, 500) == 50.0
    assert rate.rate(110.5, 600) == 600 / 10.5  # the current count, not the last sample's


def test_rate_covers_only_the_last_minute_once_older() -> None:
    rate = RateWindow()
    rate.sample(0.0, 0)
    for t in range(1, 121):  # 1000/s for the first minute, then 10/s
        rate.sample(float(t), 1000 * min(t, 60) + 10 * max(0, t - 60))
    count = 60_000 + 600
    assert abs(rate.rate(120.0, count) - 10.0) < 1e-9
    assert len(rate.samples) <= 62  # bounded by the window, not by the process's age


def test_rate_samples_at_most_once_a_second_and_is_zero_when_idle() -> None:
    rate = RateWindow()
    for i in range(50):
        rate.sample(i / 5, i)  # the sampler's 0.2 s tick
    assert [t for t, _ in rate.samples] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    assert events_per_second([], 5.0, 10) == 0.0
    assert events_per_second([(5.0, 0)], 5.0, 10) == 0.0  # no time has passed
    idle = RateWindow()
    for t in range(200):
        idle.sample(float(t), 7)
    assert idle.rate(200.0, 7) == 0.0


def test_rate_falls_back_to_the_last_sample_when_the_sampler_was_late() -> None:
    assert events_per_second([(0.0, 0), (10.0, 100)], 100.0, 1000) == 900 / 90


def test_gap_window_counts_the_last_hour_and_forgets_older_gaps() -> None:
    gaps = GapWindow()
    assert gaps.count(0.0) == 0
    for t in (10.0, 20.0, 3000.0):
        gaps.record(t)
    assert gaps.count(3500.0) == 3
    assert gaps.count(3611.0) == 2  # 10.0 is now more than an hour ago
    assert gaps.count(6601.0) == 0
    assert not gaps.times
    assert count_since([1.0, 2.0, 3.0], 2.0) == 2


def test_backlog_sums_the_streams_that_have_one() -> None:
    assert backlog_total([b"3", None, b"0", b"12"]) == 15  # HMGET: nil for a stream never written
    assert backlog_total([]) == 0


def test_document_and_timestamps() -> None:
    assert rfc3339(None) is None
    assert rfc3339(1796173323.456) == "2026-12-02T01:02:03.456Z"
    doc = stats_document(
        writer="binance-0-1a2b3c4d",
        started_at=1796173300.0,
        events={"svoe:BINANCE:trades:BTC-USDT": 5, "svoe:BINANCE:l2_book:BTC-USDT": 7},
        last={"svoe:BINANCE:trades:BTC-USDT": 1796173323.456, "svoe:BINANCE:l2_book:BTC-USDT": 1796173320.0},
        streams=[("trades", "BTC-USDT"), ("l2_book", "BTC-USDT"), ("trades", "ETH-USDT")],
        exchange="BINANCE",
        events_per_second=12.345,
        backlog=None,
        gaps_last_hour=2,
    )
    assert doc == {
        "writer": "binance-0-1a2b3c4d",
        "lastEventTime": "2026-12-02T01:02:03.456Z",
        "eventsPerSecond": 12.3,
        "events": 12,
        "backlog": None,
        "gapsLastHour": 2,
        "streams": [
            {"channel": "trades", "symbol": "BTC-USDT", "lastEventTime": "2026-12-02T01:02:03.456Z", "events": 5},
            {"channel": "l2_book", "symbol": "BTC-USDT", "lastEventTime": "2026-12-02T01:02:00.000Z", "events": 7},
            {"channel": "trades", "symbol": "ETH-USDT", "lastEventTime": None, "events": 0},
        ],
        "since": "2026-12-02T01:01:40.000Z",
    }


def test_writer_counts_market_data_per_stream_with_its_newest_append_time() -> None:
    from svoe.feedpod.redis_buffer import StreamWriter, _Entry, _Pending

    a, b, ev = "svoe:X:trades:A", "svoe:X:l2_book:B", "svoe:X:feed_events:_feed"
    batch = [
        _Entry(a, "1-0", [_Pending(a, b"", "trades", 10.0), _Pending(a, b"", "trades", 12.0)]),
        _Entry(b, "1-0", [_Pending(b, b"", "l2_book", 11.0)]),
        _Entry(ev, "1-0", [_Pending(ev, b"", "feed_events", 13.0)]),
    ]
    w = StreamWriter(client=None, exchange="X")  # type: ignore[arg-type]  # _count does no I/O
    w._count(batch)
    w._count([_Entry(b, "1-1", [_Pending(b, b"", "l2_book", 14.0)])])
    assert w.stream_events == {a: 2, b: 2} and w.events == 4
    offset = w.stream_last[b] - 14.0  # perf_counter to wall time, one offset per batch
    assert abs(w.stream_last[a] - 12.0 - offset) < 0.01 and ev not in w.stream_last
