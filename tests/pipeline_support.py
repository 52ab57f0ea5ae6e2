"""Helpers for end-to-end pipeline tests: manifests from captures, running the CLI, reading the lake."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from svoe.net import free_port


def capture_manifest(captures: Path, exchange: str, lake: str, **spec_extra: Any) -> dict[str, Any]:
    from svoe.replay import capture_subscription

    sub = capture_subscription(str(captures), exchange)
    channels = list(sub)
    symbols = list(dict.fromkeys(s for syms in sub.values() for s in syms))
    spec: dict[str, Any] = {
        "exchange": exchange,
        "channels": channels,
        "symbols": symbols,
        "storage": {"lake": lake, "flushIntervalSeconds": 1.0},
        "live": {"enabled": False},
    }
    for k, v in spec_extra.items():
        spec[k] = {**spec.get(k, {}), **v} if isinstance(v, dict) else v
    name = exchange.lower().replace("_", "-").replace(".", "-")
    return {"apiVersion": "svoe.io/v1alpha1", "kind": "DataFeed", "metadata": {"name": name}, "spec": spec}


def write_manifest(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def svoe(*args: str, timeout: float = 240, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "svoe.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def lake_totals(lake: str, env: dict[str, str] | None = None) -> dict[str, dict[str, int]]:
    res = svoe("lake", "stats", lake, "--json", env=env)
    assert res.returncode == 0, res.stderr
    counts: dict[str, dict[str, dict[str, int]]] = json.loads(res.stdout)
    return {ex: {ch: sum(s.values()) for ch, s in chs.items()} for ex, chs in counts.items()}


class FeedPodProcesses:
    """The feed pod's processes run by hand, so a test can kill and restart each one:
    a replay exchange, `svoe collector` and `svoe aggregator`, against a given Redis."""

    def __init__(self, tmp: Path, captures: Path, exchange: str, redis_url: str, lake: str, speed: float | None,
                 env: dict[str, str] | None = None, **spec_extra: Any) -> None:  # fmt: skip
        self.tmp = tmp
        self.redis_url = redis_url
        self.env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"), **(env or {})}
        (tmp / "metrics").mkdir(exist_ok=True)
        self.replay = subprocess.Popen(
            [sys.executable, "-m", "tests.replay_proc", str(captures), exchange, *([str(speed)] if speed else [])],
            stdout=subprocess.PIPE, text=True, env=self.env,
        )  # fmt: skip
        assert self.replay.stdout is not None
        endpoints = json.loads(self.replay.stdout.readline())
        doc = capture_manifest(captures, exchange, lake, endpoints=endpoints, **spec_extra)
        self.manifest = write_manifest(tmp / "feed.yaml", doc)
        self.collector_port = free_port()
        self.aggregator_port = free_port()
        self.collector: subprocess.Popen[bytes] | None = None
        self.aggregator: subprocess.Popen[bytes] | None = None

    def _spawn(self, role: str, port: int) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "svoe.cli", role, "--manifest", str(self.manifest), "--redis", self.redis_url,
                "--health-host", "127.0.0.1", "--health-port", str(port)]  # fmt: skip
        if role == "collector":
            args += ["--log-file", str(self.tmp / "feedhandler.log")]
        return subprocess.Popen(args, env=self.env)

    def start_collector(self) -> None:
        self.collector = self._spawn("collector", self.collector_port)

    def start_aggregator(self) -> None:
        self.aggregator = self._spawn("aggregator", self.aggregator_port)

    def wait_exhausted(self, timeout: float = 120) -> None:
        assert self.replay.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline and line != "exhausted":
            line = self.replay.stdout.readline().strip()
        assert line == "exhausted", "replay did not finish"

    def stop_all(self, settle: float = 2.0) -> None:
        """Graceful end: collector first (writes out its buffer), then the aggregator drains."""
        time.sleep(settle)
        for p in (self.collector, self.aggregator, self.replay):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=120)

    def kill_all(self) -> None:
        for p in (self.collector, self.aggregator, self.replay):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except (urllib.error.URLError, OSError) as err:
        return 0, f"unreachable: {err}"
