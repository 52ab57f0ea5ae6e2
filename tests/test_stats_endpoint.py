"""The collector's /stats over HTTP, read while real `svoe run` replays run: a clean capture and
the same capture with a connection the replay exchange closes, side by side to keep it short."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from svoe.feedpod.local_run import free_port
from tests.pipeline_support import capture_manifest, http_get, write_manifest

EXCHANGE = "BINANCE"
SPEED = "20"  # the capture in about 1.5 s: several polls while events flow


def _start(captures: Path, tmp: Path, name: str, *fault: str) -> tuple[subprocess.Popen[str], int]:
    doc = capture_manifest(captures, EXCHANGE, str(tmp / name / "lake"))
    doc["metadata"]["name"] = f"stats-{name}"
    manifest = write_manifest(tmp / f"{name}.yaml", doc)
    port = free_port()
    argv = ["run", str(manifest), "--replay", str(captures), "--replay-speed", SPEED, "--metrics-port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "svoe.cli", *argv, *fault],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    return proc, port


def _poll(runs: dict[str, tuple[subprocess.Popen[str], int]], timeout: float = 120) -> dict[str, list[dict[str, Any]]]:
    """Every /stats answer of each run until all runs exit."""
    seen: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p, _ in runs.values()) and time.monotonic() < deadline:
        for name, (proc, port) in runs.items():
            if proc.poll() is None:
                status, body = http_get(f"http://127.0.0.1:{port}/stats", timeout=2)
                if status == 200:
                    seen[name].append(json.loads(body))
        time.sleep(0.2)
    return seen


def _moments(docs: list[dict[str, Any]]) -> list[datetime]:
    return [datetime.fromisoformat(d["lastEventTime"]) for d in docs if d["lastEventTime"] is not None]


def test_stats_during_a_replay_clean_and_with_a_closed_connection(captures: Path, tmp_path: Path) -> None:
    runs = {
        "clean": _start(captures, tmp_path, "clean"),
        "closed": _start(captures, tmp_path, "closed", "--replay-close-after", "60"),
    }
    try:
        seen = _poll(runs)
    finally:
        for proc, _ in runs.values():
            if proc.poll() is None:
                proc.kill()
    spec = capture_manifest(captures, EXCHANGE, str(tmp_path))["spec"]
    streams = [(c, s) for c in spec["channels"] for s in spec["symbols"]]  # DataFeed.streams() order
    outputs = {name: proc.communicate(timeout=30) for name, (proc, _) in runs.items()}
    for name, (proc, _) in runs.items():
        assert proc.returncode == 0, outputs[name][1][-3000:]

    for name, docs in seen.items():
        assert len(docs) >= 3, f"{name}: only {len(docs)} answers"
        moments = _moments(docs)
        assert len(set(moments)) >= 2 and moments == sorted(moments), f"{name}: lastEventTime did not move"
        assert all(d["lastEventTime"].endswith("Z") for d in docs if d["lastEventTime"])
        assert max(d["eventsPerSecond"] for d in docs) > 0, name
        assert all(isinstance(d["backlog"], int) for d in docs), [d["backlog"] for d in docs]
        events = [d["events"] for d in docs]
        assert events == sorted(events) and events[-1] > 0
        last = docs[-1]
        assert sum(s["events"] for s in last["streams"]) == last["events"]
        assert [(s["channel"], s["symbol"]) for s in last["streams"]] == streams
        assert f"as writer {last['writer']}" in outputs[name][1]
        assert datetime.fromisoformat(last["since"]) <= moments[0]

    assert all(d["gapsLastHour"] == 0 for d in seen["clean"]), [d["gapsLastHour"] for d in seen["clean"]]
    assert seen["closed"][-1]["gapsLastHour"] > 0, [d["gapsLastHour"] for d in seen["closed"]]
