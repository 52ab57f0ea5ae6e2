"""Compaction: closed partitions of a real two-collector lake become a few exactly-once files; a
kill -9 after every single change to the lake, run after run, never changes the view; a rerun is a
no-op; open partitions are never touched; gaps read the same afterwards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from svoe.lake import Lake
from svoe.lake.compact import is_compacted, plan_lake
from svoe.lake.gaps import lake_gaps
from svoe.lake.layout import LakeLocation
from svoe.lake.schema import SVOE_COLUMNS
from tests.pipeline_support import capture_manifest, svoe, write_manifest

EXCHANGE = "BINANCE_FUTURES"
FAR = "2100-01-01"


def _content(lake: Path, channel: str, symbol: str | None = None) -> list[tuple[Any, ...]]:
    """The view's rows of a channel, in view order, without svoe's own columns."""
    table = Lake(str(lake)).read(channel, EXCHANGE, [symbol] if symbol else None)
    cols = [c for c in table.column_names if c not in SVOE_COLUMNS]
    return list(zip(*(table[c].to_pylist() for c in cols), strict=True))


def _everything(lake: Path) -> dict[str, list[tuple[Any, ...]]]:
    return {ch: _content(lake, ch) for ch in Lake(str(lake)).channels()}


def _files(lake: Path) -> dict[str, int]:
    return {str(p.relative_to(lake)): p.stat().st_mtime_ns for p in lake.rglob("*.parquet")}


@pytest.fixture(scope="module")
def two_writer_lake(tmp_path_factory: pytest.TempPathFactory, captures: Path) -> Path:
    """Two collectors of one feed side by side, flushing every 0.2 s: many small blocks of both."""
    tmp = tmp_path_factory.mktemp("compact")
    lake = tmp / "lake"
    doc = capture_manifest(captures, EXCHANGE, str(lake), storage={"flushIntervalSeconds": 0.2})
    runs = []
    for i in range(2):
        manifest = write_manifest(tmp / f"feed{i}.yaml", {**doc, "metadata": {"name": f"futures-{i}"}})
        cmd = [sys.executable, "-m", "svoe.cli", "run", str(manifest), "--replay", str(captures),
               "--replay-speed", "8", "--metrics-port", "0"]  # fmt: skip
        runs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in runs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out[-3000:]
    return lake


def test_open_partitions_are_left_alone(two_writer_lake: Path) -> None:
    before = _files(two_writer_lake)
    tasks, skipped = plan_lake(str(two_writer_lake))  # today's partitions are still open
    assert not tasks and skipped and all("--before" in s.reason for s in skipped)
    tasks, skipped = plan_lake(str(two_writer_lake), before=FAR)  # written seconds ago
    assert not tasks and all("--min-age" in s.reason for s in skipped)
    res = svoe("lake", "compact", str(two_writer_lake), "--before", FAR)
    assert res.returncode == 0, res.stderr
    assert "compacted 0 partitions" in res.stdout and "being written" in res.stdout
    assert _files(two_writer_lake) == before


def test_planning_takes_every_mtime_from_the_listing(two_writer_lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On S3 a stat is a HEAD request: a day of 30 s flushes would be thousands of them in a row."""
    asked: list[str] = []
    real = LakeLocation.filesystem

    class Counting:
        def __init__(self, fs: Any) -> None:
            self._fs = fs

        def get_file_info(self, what: Any) -> Any:
            asked.append(type(what).__name__)
            return self._fs.get_file_info(what)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._fs, name)

    monkeypatch.setattr(LakeLocation, "filesystem", lambda self: Counting(real(self)))
    tasks, _ = plan_lake(str(two_writer_lake), before=FAR, min_age=0)
    blocks = len(list(two_writer_lake.rglob("*.parquet")))
    assert tasks and blocks > 10
    assert asked.count("str") == 1, asked  # the root's own check, not one per block
    assert asked.count("FileSelector") <= 1 + len(Lake(str(two_writer_lake)).channels()), asked


def test_kill_9_at_every_step_never_changes_the_view(two_writer_lake: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    subprocess.run(["cp", "-r", str(two_writer_lake), str(lake)], check=True)
    symbol = "SUSHI-USDT-PERP"
    expected = _content(lake, "l2_book", symbol)
    writers = {Path(p).name.split(".")[1] for p in _files(lake) if "l2_book" in p and symbol in p}
    assert len(writers) == 2 and len(expected) > 100
    args = ["lake", "compact", str(lake), "--before", FAR, "--min-age", "0", "--workers", "1",
            "--channel", "l2_book", "--exchange", EXCHANGE, "--symbol", symbol, "--target-size", "16KB"]  # fmt: skip
    # Run after run, each killed after one more change than the last, each from where the last
    # left the lake: every partial state (new files beside old, half the old ones deleted, two
    # generations at once) is read back.
    kills = 0
    for step in range(1, 200):
        res = svoe(*args, env={"SVOE_COMPACT_KILL_AFTER": str(step)})
        assert _content(lake, "l2_book", symbol) == expected, f"view changed after a kill at step {step}"
        if res.returncode == 0:
            break
        assert res.returncode == -9, res.stderr[-2000:]
        kills += 1
    assert kills >= 5  # several outputs and many inputs: the kills did land mid-way
    part = [p for p in _files(lake) if "l2_book" in p and symbol in p]
    assert len(part) >= 2 and all(".parquet" in p and "._compacted-" in p for p in part)
    assert len({p.split(".")[1] for p in part}) == 1  # one generation left
    again = svoe(*args)
    assert again.returncode == 0 and "compacted 0 partitions" in again.stdout, again.stdout
    assert _content(lake, "l2_book", symbol) == expected


def test_compacting_a_lake_keeps_every_view_stats_and_gaps(two_writer_lake: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    subprocess.run(["cp", "-r", str(two_writer_lake), str(lake)], check=True)
    views, gaps = _everything(lake), lake_gaps(Lake(str(lake)))
    stats = svoe("lake", "stats", str(lake), "--json").stdout
    files = len(_files(lake))
    res = svoe("lake", "compact", str(lake), "--before", FAR, "--min-age", "0")
    assert res.returncode == 0, res.stderr
    after = Lake(str(lake))
    blocks = after.scanner.blocks()
    partitions = {(b.key.channel, b.key.symbol, b.key.date) for b in blocks}
    assert all(is_compacted(b) for b in blocks) and len(blocks) == len(partitions) < files
    assert _everything(lake) == views
    assert svoe("lake", "stats", str(lake), "--json").stdout == stats
    raw = svoe("lake", "stats", str(lake), "--raw", "--json").stdout
    assert raw == stats  # the files now hold each event once
    assert lake_gaps(after) == gaps
    noop = svoe("lake", "compact", str(lake), "--before", FAR, "--min-age", "0")
    assert "compacted 0 partitions" in noop.stdout and "already compacted" in noop.stdout


def test_bad_compaction_input_exits_2(tmp_path: Path) -> None:
    res = svoe("lake", "compact", str(tmp_path), "--target-size", "lots")
    assert res.returncode == 2 and "--target-size" in res.stderr and "128MB" in res.stderr
    res = svoe("lake", "compact", str(tmp_path), "--before", "yesterday")
    assert res.returncode == 2 and "YYYY-MM-DD" in res.stderr
    res = svoe("lake", "compact", str(tmp_path / "nope"))
    assert res.returncode == 2 and "no lake" in res.stderr


def test_feed_events_are_facts_of_their_collector_and_survive_compaction_once() -> None:
    import pyarrow as pa

    from svoe.lake.reader import duckdb_connection
    from svoe.lake.schema import CHANNEL_SCHEMAS
    from svoe.lake.view import exactly_once_sql

    def row(writer: str, origin: str | None, ms: int, t: float) -> dict[str, object]:
        return {"svoe_writer": writer, "svoe_origin": origin, "svoe_ms": ms, "svoe_seq": 0, "receipt_timestamp": t,
                "kind": "disconnect", "detail": '{"connection": "ws.1", "streams": null}'}  # fmt: skip

    schema = (
        CHANNEL_SCHEMAS["feed_events"].append(pa.field("exchange", pa.string())).append(pa.field("symbol", pa.string()))
    )
    rows = [row("a", None, 1, 5.0), row("b", None, 1, 5.0), row("a", None, 2, 9.0)]  # two replicas, same detail
    compacted = [row("_compacted-x", "a", 7, 5.0), row("_compacted-x", "a", 8, 9.0)]  # a's, rewritten
    con = duckdb_connection()
    for name, table in (("raw", rows), ("mixed", rows + compacted)):
        con.register(name, pa.Table.from_pylist([{**r, "exchange": "X", "symbol": "_feed"} for r in table], schema))
        got = con.sql(f"SELECT svoe_origin, svoe_writer FROM ({exactly_once_sql('feed_events', name)})").fetchall()
        assert len(got) == 3, (name, got)  # a at 5 and 9, b at 5: each once


def test_identities_that_can_recur_on_another_day_are_left_alone(tmp_path: Path) -> None:
    """Tickers without an exchange time are identified by (bid, ask) alone. One collector stored
    the same quote on two days: the view holds it twice, and compacting one day into a writer of
    its own would fold the two into one. Such partitions are left as they are."""
    import pyarrow as pa

    from svoe.feedpod.lake_writer import LocalLakeWriter
    from svoe.lake.layout import BlockKey
    from svoe.lake.schema import CHANNEL_SCHEMAS

    writer = LocalLakeWriter(tmp_path)
    for day, t in (("2023-11-14", 1700000000.0), ("2023-11-15", 1700090000.0)):
        ms = int(t * 1000)
        row = {"svoe_id": f"{ms}-0", "svoe_ms": ms, "svoe_seq": 0, "svoe_writer": "a", "timestamp": t,
               "receipt_timestamp": t, "bid": 1.0, "ask": 2.0}  # fmt: skip
        table = pa.Table.from_pylist([row], schema=CHANNEL_SCHEMAS["ticker"])
        writer.write_block(BlockKey("ticker", "BINANCE", "BTC-USDT", day, f"{ms}-0", "a"), table)
    assert len(Lake(str(tmp_path)).read("ticker")) == 2
    res = svoe("lake", "compact", str(tmp_path), "--before", FAR, "--min-age", "0", "--workers", "1")
    assert res.returncode == 0 and "compacted 0 partitions" in res.stdout, res.stdout + res.stderr
    assert "2 events without an exchange time" in res.stdout
    assert len(Lake(str(tmp_path)).read("ticker")) == 2
