"""Acceptance: every captured exchange, replayed through `svoe run`, lands in the lake with exactly
the reference counts of the captures README, and no event is stored twice."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from svoe.replay import list_capture_exchanges, reference_counts
from tests.conftest import CAPTURES
from tests.pipeline_support import capture_manifest, lake_totals, svoe, write_manifest


def _exchanges() -> list[str]:
    return list_capture_exchanges(str(CAPTURES)) if CAPTURES.exists() else []


def assert_no_duplicate_ids(lake: Path) -> None:
    for stream_dir in {p.parent.parent for p in lake.rglob("*.parquet") if ".svoe-state" not in p.parts}:
        ids = [
            i
            for f in sorted(stream_dir.rglob("*.parquet"))
            for i in pq.read_table(f, columns=["svoe_id"])["svoe_id"].to_pylist()
        ]
        assert len(ids) == len(set(ids)), f"duplicate events in {stream_dir}"


@pytest.mark.parametrize("exchange", _exchanges())
def test_replay_into_lake_matches_reference(exchange: str, captures: Path, tmp_path: Path) -> None:
    expected = reference_counts(str(captures))[exchange]
    lake = tmp_path / "lake"
    manifest = write_manifest(tmp_path / "feed.yaml", capture_manifest(captures, exchange, str(lake)))
    res = svoe("run", str(manifest), "--replay", str(captures), "--metrics-port", "0")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "collected" in res.stderr  # progress was shown
    assert "run finished" in res.stdout  # and a summary printed
    got = lake_totals(str(lake)).get(exchange, {})
    assert got == {ch: n for ch, n in expected.items() if n}, f"{exchange}: lake {got} != reference {expected}"
    assert_no_duplicate_ids(lake)


def test_symbol_the_exchange_does_not_list_exits_2(captures: Path, tmp_path: Path) -> None:
    doc = capture_manifest(captures, "BINANCE", str(tmp_path / "lake"))
    doc["spec"]["symbols"] = [*doc["spec"]["symbols"], "FOO-BAR"]
    res = svoe(
        "run", str(write_manifest(tmp_path / "feed.yaml", doc)), "--replay", str(captures), "--metrics-port", "0"
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "spec.symbols" in res.stderr and "FOO-BAR" in res.stderr
