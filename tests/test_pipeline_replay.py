"""Acceptance: every captured exchange, replayed through `svoe run`, lands in the lake with exactly
the reference counts of the captures README, and no event is stored twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from svoe.replay import list_capture_exchanges, reference_counts
from tests.conftest import CAPTURES
from tests.pipeline_support import capture_manifest, lake_totals, svoe, write_manifest


def _exchanges() -> list[str]:
    return list_capture_exchanges(str(CAPTURES)) if CAPTURES.exists() else []


def assert_no_duplicate_ids(lake: Path) -> None:
    """Within one writer's rows of a stream, every stream id appears once."""
    for stream_dir in {p.parent.parent for p in lake.rglob("*.parquet") if ".svoe-state" not in p.parts}:
        table = pa.concat_tables(
            pq.read_table(f, columns=["svoe_writer", "svoe_id"]) for f in sorted(stream_dir.rglob("*.parquet"))
        )
        keys = list(zip(table["svoe_writer"].to_pylist(), table["svoe_id"].to_pylist(), strict=True))
        assert len(keys) == len(set(keys)), f"duplicate events in {stream_dir}"


def raw_totals(lake: str) -> dict[str, dict[str, int]]:
    res = svoe("lake", "stats", lake, "--raw", "--json")
    assert res.returncode == 0, res.stderr
    counts: dict[str, dict[str, dict[str, int]]] = json.loads(res.stdout)
    return {ex: {ch: sum(s.values()) for ch, s in chs.items()} for ex, chs in counts.items()}


@pytest.mark.parametrize("exchange", _exchanges())
def test_two_runs_side_by_side_then_a_third_hold_each_event_once(exchange: str, captures: Path, tmp_path: Path) -> None:
    """Two `svoe run`s of one capture at once, into one lake, with manifests that differ only in
    their name and default ports, then a third run: the view holds the reference counts, and the
    stored rows are three times as many (no writer replaced another's blocks)."""
    expected = {ch: n for ch, n in reference_counts(str(captures))[exchange].items() if n}
    lake = tmp_path / "lake"
    manifests = []
    for name in ("first", "second"):
        doc = capture_manifest(captures, exchange, str(lake))
        doc["metadata"]["name"] = f"{doc['metadata']['name']}-{name}"
        del doc["spec"]["live"]  # the default live port, 5555: the second run must move off it
        manifests.append(write_manifest(tmp_path / f"{name}.yaml", doc))
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "svoe.cli", "run", str(m), "--replay", str(captures)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in manifests
    ]
    outputs = [p.communicate(timeout=240) for p in runs]
    for p, (stdout, stderr) in zip(runs, outputs, strict=True):
        assert p.returncode == 0, stderr[-3000:]
        assert "run finished" in stdout and "collected" in stderr
    assert "is in use, using" in outputs[0][1] + outputs[1][1]  # one of them moved off a busy default port
    assert lake_totals(str(lake)).get(exchange, {}) == expected
    # No false positives: the unmodified capture has no gap, and each run says so.
    assert all("no gaps" in stdout for stdout, _ in outputs), outputs[0][0]
    gaps = svoe("lake", "gaps", str(lake), "--json")
    assert gaps.returncode == 0 and json.loads(gaps.stdout) == [], gaps.stdout[:2000]
    third = svoe("run", str(manifests[0]), "--replay", str(captures))
    assert third.returncode == 0, third.stderr[-3000:]
    got = lake_totals(str(lake)).get(exchange, {})
    assert got == expected, f"{exchange}: exactly-once view {got} != reference {expected}"
    stored = raw_totals(str(lake)).get(exchange, {})
    assert stored == {ch: 3 * n for ch, n in expected.items()}, f"{exchange}: stored rows {stored}"
    assert_no_duplicate_ids(lake)


def test_symbol_the_exchange_does_not_list_exits_2(captures: Path, tmp_path: Path) -> None:
    doc = capture_manifest(captures, "BINANCE", str(tmp_path / "lake"))
    doc["spec"]["symbols"] = [*doc["spec"]["symbols"], "FOO-BAR"]
    res = svoe(
        "run", str(write_manifest(tmp_path / "feed.yaml", doc)), "--replay", str(captures), "--metrics-port", "0"
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "spec.symbols" in res.stderr and "FOO-BAR" in res.stderr
