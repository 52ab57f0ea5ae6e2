"""Acceptance: every captured exchange, replayed through `svoe run`, lands in the lake with exactly
the reference counts of the captures README, and no event is stored twice.

Each exchange's scenario is a chain of `svoe` subprocesses, and one chain keeps a 2-core machine
only half busy, so a module fixture runs the chains of the selected exchanges a few at a time on
worker threads; each test waits for its own exchange's outputs and checks them in the order the
scenario produced them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from svoe.lake.layout import parse_relpath
from svoe.replay import list_capture_exchanges, reference_counts
from tests.conftest import CAPTURES, selected_params, thread_env
from tests.pipeline_support import capture_manifest, svoe, write_manifest

SCENARIO_THREADS = 3  # exchanges in flight at once
Output = tuple[int, str, str]  # returncode, stdout, stderr


def _exchanges() -> list[str]:
    return list_capture_exchanges(str(CAPTURES)) if CAPTURES.exists() else []


def assert_no_duplicate_ids(lake: Path) -> None:
    """Within one writer's rows of a stream, every stream id appears once. Only the lake's blocks
    count, as for every svoe reader (layout.parse_relpath): not `.svoe-state/`, and not the
    temporary file a write killed before its rename leaves behind."""
    streams: dict[tuple[str, str, str], list[Path]] = {}
    for p in sorted(lake.rglob("*")):
        key = parse_relpath(p.relative_to(lake).as_posix()) if p.is_file() else None
        if key is not None:
            streams.setdefault((key.channel, key.exchange, key.symbol), []).append(p)
    for stream, files in streams.items():
        table = pa.concat_tables(pq.read_table(f, columns=["svoe_writer", "svoe_id"]) for f in files)
        keys = list(zip(table["svoe_writer"].to_pylist(), table["svoe_id"].to_pylist(), strict=True))
        assert len(keys) == len(set(keys)), f"duplicate events in {'/'.join(stream)}"


def _totals(res: Output) -> dict[str, dict[str, int]]:
    """`svoe lake stats --json [--raw]` per exchange and channel, summed over symbols."""
    code, stdout, stderr = res
    assert code == 0, stderr
    counts: dict[str, dict[str, dict[str, int]]] = json.loads(stdout)
    return {ex: {ch: sum(s.values()) for ch, s in chs.items()} for ex, chs in counts.items()}


class Cli:
    """`python -m svoe.cli ARGS` with stdout and stderr read by threads as they come. Off the main
    thread the environment is a fixed copy: the main thread's monkeypatch changes os.environ."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "svoe.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: tuple[list[str], list[str]] = ([], [])
        # `svoe run` chooses its ports first (holding a lock against other runs until it has bound
        # them) and then says "replaying ..." (or, without --replay, "collecting ...").
        self.ports_chosen = threading.Event()
        self.readers = [threading.Thread(target=self._read, args=(s, out), daemon=True)
                        for s, out in zip((self.proc.stdout, self.proc.stderr), self.lines, strict=True)]  # fmt: skip
        for t in self.readers:
            t.start()

    def _read(self, stream: IO[str] | None, out: list[str]) -> None:
        assert stream is not None
        for line in stream:
            out.append(line)
            if line.startswith(("replaying ", "collecting ")):
                self.ports_chosen.set()
        self.ports_chosen.set()  # at the end too: a run that failed early must not hold the gate

    def result(self, timeout: float = 240) -> Output:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for t in self.readers:
                t.join(timeout=30)  # a killed run's children may still hold its pipes open
        return self.proc.returncode, "".join(self.lines[0]), "".join(self.lines[1])


def _all(env: dict[str, str], *argvs: list[str]) -> list[Output]:
    """Independent read-only CLI calls, side by side."""
    calls = [Cli(env, *argv) for argv in argvs]
    return [c.result() for c in calls]


@dataclass
class Scenario:
    lake: Path
    side_by_side: list[Output]  # the two runs started together
    stats: Output  # after them: exactly-once view counts
    gaps: Output
    third: Output
    stats_after_third: Output
    raw_after_third: Output


def _scenario(exchange: str, captures: Path, tmp: Path, env: dict[str, str], gate: threading.Lock) -> Scenario:
    lake = tmp / "lake"
    manifests = []
    for name in ("first", "second"):
        doc = capture_manifest(captures, exchange, str(lake))
        doc["metadata"]["name"] = f"{doc['metadata']['name']}-{name}"
        del doc["spec"]["live"]  # the default live port, 5555: the second run must move off it
        manifests.append(write_manifest(tmp / f"{name}.yaml", doc))

    def runs(*which: Path) -> list[Output]:
        # The gate keeps other exchanges' runs from choosing ports between the two runs of a pair,
        # so the pair contends for the default ports exactly as two lone runs started at once do.
        with gate:
            started = [Cli(env, "run", str(m), "--replay", str(captures)) for m in which]
            for c in started:
                c.ports_chosen.wait(timeout=120)
        return [c.result() for c in started]

    side_by_side = runs(*manifests)
    stats, gaps = _all(env, ["lake", "stats", str(lake), "--json"], ["lake", "gaps", str(lake), "--json"])
    [third] = runs(manifests[0])
    stats_after, raw_after = _all(
        env, ["lake", "stats", str(lake), "--json"], ["lake", "stats", str(lake), "--raw", "--json"]
    )
    return Scenario(lake, side_by_side, stats, gaps, third, stats_after, raw_after)


@pytest.fixture(scope="module")
def scenarios(
    request: pytest.FixtureRequest, captures: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Scenario]]:
    """Starts the scenario of every selected exchange, in test order; yields a lookup that waits
    for one exchange's."""
    env = thread_env(tmp_path_factory)
    gate = threading.Lock()
    pool = ThreadPoolExecutor(SCENARIO_THREADS, thread_name_prefix="replay")
    futures: dict[str, Future[Scenario]] = {
        ex: pool.submit(_scenario, ex, captures, tmp_path_factory.mktemp(f"replay-{ex}"), env, gate)
        for ex in selected_params(request, "exchange")
    }
    yield lambda exchange: futures[exchange].result(timeout=280)
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("exchange", _exchanges())
def test_two_runs_side_by_side_then_a_third_hold_each_event_once(
    exchange: str, captures: Path, scenarios: Callable[[str], Scenario]
) -> None:
    """Two `svoe run`s of one capture at once, into one lake, with manifests that differ only in
    their name and default ports, then a third run: the view holds the reference counts, and the
    stored rows are three times as many (no writer replaced another's blocks)."""
    expected = {ch: n for ch, n in reference_counts(str(captures))[exchange].items() if n}
    s = scenarios(exchange)
    for code, stdout, stderr in s.side_by_side:
        assert code == 0, stderr[-3000:]
        assert "run finished" in stdout and "collected" in stderr
    assert "is in use, using" in s.side_by_side[0][2] + s.side_by_side[1][2]  # one moved off a busy default port
    assert _totals(s.stats).get(exchange, {}) == expected
    # No false positives: the unmodified capture has no gap, and each run says so.
    assert all("no gaps" in stdout for _, stdout, _ in s.side_by_side), s.side_by_side[0][1]
    code, stdout, _ = s.gaps
    assert code == 0 and json.loads(stdout) == [], stdout[:2000]
    assert s.third[0] == 0, s.third[2][-3000:]
    got = _totals(s.stats_after_third).get(exchange, {})
    assert got == expected, f"{exchange}: exactly-once view {got} != reference {expected}"
    stored = _totals(s.raw_after_third).get(exchange, {})
    assert stored == {ch: 3 * n for ch, n in expected.items()}, f"{exchange}: stored rows {stored}"
    assert_no_duplicate_ids(s.lake)


def test_symbol_the_exchange_does_not_list_exits_2(captures: Path, tmp_path: Path) -> None:
    doc = capture_manifest(captures, "BINANCE", str(tmp_path / "lake"))
    doc["spec"]["symbols"] = [*doc["spec"]["symbols"], "FOO-BAR"]
    res = svoe(
        "run", str(write_manifest(tmp_path / "feed.yaml", doc)), "--replay", str(captures), "--metrics-port", "0"
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "spec.symbols" in res.stderr and "FOO-BAR" in res.stderr
