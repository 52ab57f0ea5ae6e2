"""The bench's rig: a bad capture or a machine without redis-server stops a bench (and `svoe run`)
before anything starts, with the exit code of the cause; the rig itself runs both sides."""

from __future__ import annotations

from pathlib import Path

from svoe.bench.pipeline import run_bare
from svoe.bench.pod import run_svoe
from svoe.bench.rig import CHANNEL
from svoe.replay import capture_subscription, list_capture_exchanges, loopable_exchanges
from tests.pipeline_support import capture_manifest, svoe, write_manifest


def test_run_with_a_missing_capture_exits_2_and_leaves_no_lake(tmp_path: Path, captures: Path) -> None:
    lake = tmp_path / "lake"
    manifest = write_manifest(tmp_path / "feed.yaml", capture_manifest(captures, "BINANCE", str(lake)))
    res = svoe("run", str(manifest), "--replay", str(tmp_path / "missing"), "--lake", str(lake), timeout=60)
    assert res.returncode == 2, res.stderr
    assert "--replay" in res.stderr and "does not exist" in res.stderr
    assert "Traceback" not in res.stderr
    assert not lake.exists()


def test_bench_with_a_missing_capture_exits_2(tmp_path: Path) -> None:
    res = svoe("bench", "pipeline", "--replay", str(tmp_path / "missing"), timeout=60)
    assert res.returncode == 2, res.stderr
    assert "--replay" in res.stderr and "Traceback" not in res.stderr


def test_bench_on_an_exchange_that_cannot_be_looped_exits_2(captures: Path) -> None:
    unloopable = [
        ex
        for ex in list_capture_exchanges(str(captures))
        if ex not in loopable_exchanges() and CHANNEL in capture_subscription(str(captures), ex)
    ]
    assert unloopable, "every capture with l2_book can be looped: nothing to check the refusal on"
    res = svoe("bench", "pipeline", "--replay", str(captures), "--exchange", unloopable[0], timeout=60)
    assert res.returncode == 2, res.stderr
    assert "cannot be looped" in res.stderr


def test_bench_without_redis_server_exits_1_and_says_so(tmp_path: Path, captures: Path) -> None:
    res = svoe("bench", "pipeline", "--replay", str(captures), env={"PATH": str(tmp_path)}, timeout=60)
    assert res.returncode == 1, res.stderr
    assert "redis-server is not installed" in res.stderr


def test_the_rig_runs_bare_cryptofeed_and_the_svoe_pod(captures: Path) -> None:
    symbols = capture_subscription(str(captures), "BINANCE")[CHANNEL]
    bare = run_bare("cryptofeed_bare", str(captures), "BINANCE", symbols, 2)
    assert bare["events"] > 0
    pod = run_svoe(str(captures), "BINANCE", symbols, 3)
    assert pod["events"] > 0 and pod["stored"] > 0
    assert pod["entries_stored"] == pod["collected"]
