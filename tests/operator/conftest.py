"""Fixtures for the operator tests: the emulated API server and the real operator process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from svoe.api.crd import crd
from svoe.api.crd_featureset import featureset_crd
from svoe.net import free_port
from svoe.testing.kube import EVENTS, PODS, KubeEmulator

DATAFEEDS = ("svoe.io", "v1alpha1", "datafeeds")
FEATURESETS = ("svoe.io", "v1alpha1", "featuresets")
ROOT = Path(__file__).resolve().parents[2]


class OperatorProcess:
    """`python -m svoe.operator --all-namespaces` against the emulator, as in production."""

    def __init__(self, kube: KubeEmulator, log_dir: Path, **env: str) -> None:
        self.kube = kube
        self.log_dir = log_dir
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def start(self, *args: str) -> None:
        self.starts += 1
        self.metrics_port = free_port()
        env = self.kube.env(SVOE_OPERATOR_METRICS_PORT=str(self.metrics_port), **self.env)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "svoe.operator", *(args or ("--all-namespaces",))],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the operator did not start:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-20000:] for p in sorted(self.log_dir.glob("operator-*.log")))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeEmulator]:
    # No garbage collector: children must be removed by the operator itself, not by the emulator.
    with KubeEmulator(garbage_collection=False) as k:
        k.apply_crd(crd())
        k.apply_crd(featureset_crd())
        yield k


@pytest.fixture(scope="module")
def operator(kube: KubeEmulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = OperatorProcess(kube, tmp_path_factory.mktemp("operator"))
    op.start()
    yield op
    op.stop()


@pytest.fixture
def alive_operator(operator: OperatorProcess, request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    """The module's operator, restarted if a previous test stopped it; its log is shown on failure."""
    if not operator.alive:
        operator.start()
    yield operator
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        sys.stderr.write(f"--- operator log ---\n{operator.log()[-8000:]}\n")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
    return rep


def datafeed(
    name: str, symbols: list[str], *, channels: list[str] | None = None, per_pod: int = 10, exchange: str = "BINANCE"
) -> dict[str, Any]:
    return {
        "apiVersion": "svoe.io/v1alpha1",
        "kind": "DataFeed",
        "metadata": {"name": name},
        "spec": {
            "exchange": exchange,
            "channels": channels or ["trades", "l2_book"],
            "symbols": symbols,
            "sharding": {"maxSymbolsPerPod": per_pod},
        },
    }


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def has_condition(kube: KubeEmulator, ns: str, name: str, type_: str, value: str) -> dict[str, Any] | None:
    obj = kube.get(DATAFEEDS, ns, name)
    c = condition(obj, type_)
    return (
        obj
        if c is not None and c["status"] == value and c.get("observedGeneration") == obj["metadata"]["generation"]
        else None
    )


def pods_of(kube: KubeEmulator, ns: str, name: str) -> list[dict[str, Any]]:
    return kube.list(PODS, ns, f"svoe.io/datafeed={name}")


def mark_all_ready(kube: KubeEmulator, ns: str, name: str) -> list[str]:
    names = []
    for p in pods_of(kube, ns, name):
        if not any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])):
            kube.set_pod_ready(ns, p["metadata"]["name"])
        names.append(p["metadata"]["name"])
    return names


def event_reasons(kube: KubeEmulator, ns: str, name: str) -> list[str]:
    return [e["reason"] for e in kube.list(EVENTS, ns) if e.get("involvedObject", {}).get("name") == name]
