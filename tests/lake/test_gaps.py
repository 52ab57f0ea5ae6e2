"""Gaps: the rules on synthetic feed events, then faults injected into real replays (a dropped
book update, a closed connection, a stopped collector) found for the right streams and no other."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pyarrow as pa
import pytest

from svoe.feedpod.events import FEED_EVENTS
from svoe.lake.gaps import StreamRows, merge_writers, stream_gaps, writer_missing
from svoe.lake.schema import CHANNEL_SCHEMAS
from tests.conftest import RedisProc
from tests.pipeline_support import FeedPodProcesses, capture_manifest, svoe, write_manifest

S = ("l2_book", "BTC-USDT")


def ev(writer: str, n: int, t: float, kind: str, symbol: str | None = None, **detail: object) -> dict[str, object]:
    channel = "l2_book" if symbol else None
    return {"svoe_writer": writer, "svoe_ms": n, "svoe_seq": 0, "receipt_timestamp": t, "kind": kind,
            "event_channel": channel, "event_symbol": symbol, "detail": json.dumps(detail)}  # fmt: skip


def start(writer: str, n: int, t: float) -> dict[str, object]:
    return ev(writer, n, t, "start", streams=[list(S)])


def test_a_book_gap_lasts_until_the_next_snapshot_and_a_crash_until_the_restart() -> None:
    rows = StreamRows(times=[1, 2, 3, 5, 6, 12, 13], snapshots=[1, 6, 12])
    events = [
        start("a", 0, 0.5),
        ev("a", 1, 4, "gap", "BTC-USDT", seq_before=7),
        start("a", 2, 10),
        ev("a", 3, 14, "stop"),
    ]
    view = writer_missing(events, S, rows)
    assert view is not None and (view.first, view.last) == (0.5, 14)  # it answers for S only then
    missing = {(m.kind, m.start, m.end) for m in view.missing}
    assert missing == {("sequence_gap", 4, 6), ("not_running", 6, 10)}  # crashed after its event at 6
    gaps = merge_writers([view])
    assert [(g.kind, g.start, g.end) for g in gaps] == [("sequence_gap", 4, 6), ("not_running", 6, 10)]


def test_a_window_is_a_gap_only_if_every_collector_missed_it() -> None:
    a = [start("a", 0, 0), ev("a", 1, 5, "disconnect", connection="c1", streams=None), ev("a", 2, 20, "stop")]
    b = [start("b", 0, 1), ev("b", 1, 6, "disconnect", connection="c2", streams=[list(S)]), ev("b", 2, 20, "stop")]
    rows_a, rows_b = StreamRows(times=[1, 2, 8, 19]), StreamRows(times=[2, 3, 7, 19])
    merged = merge_writers([writer_missing(a, S, rows_a), writer_missing(b, S, rows_b)])
    assert [(g.kind, g.start, g.end) for g in merged] == [("disconnect", 6, 7)]  # a was out 5..8, b 6..7
    table = pa.Table.from_pylist([*a, *b], schema=_events_schema())
    gaps = stream_gaps("BINANCE", table, {("a", S): rows_a, ("b", S): rows_b})
    assert [(g.channel, g.symbol, g.kind, g.start, g.end) for g in gaps] == [(*S, "disconnect", 6, 7)]
    other = [start("b", 0, 1), ev("b", 1, 6, "disconnect", connection="c2", streams=[["trades", "X"]])]
    assert merge_writers([writer_missing(other, S, rows_b)]) == []  # that connection did not carry S
    # One collector stops, the next starts later: between them nobody answered for S.
    first, second = [start("a", 0, 0), ev("a", 1, 5, "stop")], [start("c", 0, 9), ev("c", 1, 15, "stop")]
    assert merge_writers([writer_missing(first, S, rows_a), writer_missing(second, S, rows_b)]) == []


def _events_schema() -> pa.Schema:
    names = (
        "svoe_writer",
        "svoe_ms",
        "svoe_seq",
        "receipt_timestamp",
        "kind",
        "event_channel",
        "event_symbol",
        "detail",
    )
    return pa.schema([CHANNEL_SCHEMAS[FEED_EVENTS].field(n) for n in names]).set(1, pa.field("svoe_ms", pa.int64()))


def _gaps(lake: Path) -> list[dict[str, object]]:
    res = svoe("lake", "gaps", str(lake), "--json")
    assert res.returncode == 0, res.stderr
    gaps: list[dict[str, object]] = json.loads(res.stdout)
    return gaps


@pytest.mark.slow
def test_dropped_book_updates_show_as_a_sequence_gap_of_that_symbol_only(captures: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    manifest = write_manifest(tmp_path / "f.yaml", capture_manifest(captures, "BINANCE_FUTURES", str(lake)))
    res = svoe(
        "run", str(manifest), "--replay", str(captures), "--replay-drop", "akrousdt@depth:3", "--metrics-port", "0"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    gaps = _gaps(lake)
    assert gaps and {(g["channel"], g["symbol"], g["kind"]) for g in gaps} == {
        ("l2_book", "AKRO-USDT-PERP", "sequence_gap")
    }
    assert all(isinstance(g["end"], float) and g["end"] > g["start"] for g in gaps)  # the book came back
    assert "sequence gap" in res.stdout and "AKRO-USDT-PERP" in res.stdout
    # Compaction keeps each row's collector (svoe_origin), so the gaps read the same afterwards.
    compact = svoe("lake", "compact", str(lake), "--before", "2100-01-01", "--min-age", "0")
    assert compact.returncode == 0 and "compacted 0" not in compact.stdout, compact.stdout + compact.stderr
    assert _gaps(lake) == gaps


@pytest.mark.slow
def test_a_closed_connection_shows_as_disconnects_until_each_stream_resumes(captures: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    doc = capture_manifest(captures, "BINANCE", str(lake))
    res = svoe("run", str(write_manifest(tmp_path / "f.yaml", doc)), "--replay", str(captures),
               "--replay-close-after", "60", "--metrics-port", "0")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    gaps = _gaps(lake)
    streams = {(c, s) for c in doc["spec"]["channels"] for s in doc["spec"]["symbols"]}
    assert {g["kind"] for g in gaps} == {"disconnect"}
    assert {(g["channel"], g["symbol"]) for g in gaps} == streams  # Binance has one connection for all
    assert len({g["start"] for g in gaps}) == 1 and all(g["end"] is not None and g["end"] > g["start"] for g in gaps)


@pytest.mark.slow
def test_a_collector_stopped_mid_run_shows_its_gap(captures: Path, tmp_path: Path, redis_proc: RedisProc) -> None:
    lake = tmp_path / "lake"
    pod = FeedPodProcesses(tmp_path, captures, "KRAKEN_FUTURES", redis_proc.url, str(lake), 3.0)
    try:
        pod.start_aggregator()
        pod.start_collector()
        time.sleep(4.0)
        assert pod.collector is not None
        pod.collector.send_signal(signal.SIGTERM)
        pod.collector.wait(timeout=60)
        stopped = time.time()
        time.sleep(2.0)
        restarted = time.time()
        pod.start_collector()
        pod.wait_exhausted()
        pod.stop_all()
    finally:
        pod.kill_all()
    gaps = _gaps(lake)
    assert gaps and {g["kind"] for g in gaps} == {"not_running"}
    for g in gaps:
        assert stopped - 1.0 < g["start"] <= stopped and restarted <= g["end"] <= restarted + 15, g
