"""Fixtures of the local e2e: one API emulator, operator, moto server and pod runner per session;
an exchange (a replay) per scenario. On a failure, the operator's log and every pod's
story and container logs are printed."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.local.harness import (
    BUCKET,
    CA_CONFIGMAP,
    CAPTURES,
    ROOT,
    Exchange,
    Kubectl,
    MotoServer,
    start_exchange,
)
from e2e.local.pod_runner import PodRunner, describe
from svoe.testing.kube import KubeEmulator
from svoe.testing.operator import OperatorProcess

# The operator's default scheduling (config.feed_node_role "feed"): the node of the pod runner is a
# node of kops' feed-spot group, labelled and tainted like one.
NODE_LABELS = {"svoe.io/node-role": "feed"}
NODE_TAINTS = [{"key": "svoe.io/feed", "value": "true", "effect": "NoSchedule"}]


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    # Short and outside pytest's deep tmp tree: Redis unix socket paths must stay under ~100 bytes.
    path = Path(tempfile.mkdtemp(prefix="svoe-e2e-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeEmulator]:
    if not (CAPTURES / "README.md").exists():
        pytest.fail(f"capture directory missing at {CAPTURES}; set SVOE_CAPTURES")
    with KubeEmulator(graceful_pod_deletion=True) as k:
        yield k


@pytest.fixture(scope="session")
def kubectl(kube: KubeEmulator) -> Kubectl:
    k = Kubectl(kube)
    out = k("apply", "-f", str(ROOT / "crds" / "datafeed.yaml")).stdout
    assert "customresourcedefinition.apiextensions.k8s.io/datafeeds.svoe.io" in out, out
    return k


@pytest.fixture(scope="session")
def moto(workdir: Path) -> Iterator[MotoServer]:
    server = MotoServer(workdir / "moto.log")
    server.client("s3").create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def operator(kube: KubeEmulator, kubectl: Kubectl, workdir: Path) -> Iterator[OperatorProcess]:
    logs = workdir / "operator"
    logs.mkdir()
    # Health read every second, so that the scenarios see it in the status and in kubectl.
    op = OperatorProcess(kube, logs, SVOE_HEALTH_INTERVAL_SECONDS="1", SVOE_FEED_CA_CONFIGMAP=CA_CONFIGMAP)
    op.start()
    yield op
    op.stop()


@pytest.fixture(scope="session")
def runner(kube: KubeEmulator, moto: MotoServer, workdir: Path) -> Iterator[PodRunner]:
    r = PodRunner(
        kube,
        workdir / "pods",
        node_env=moto.env,
        node_labels=NODE_LABELS,
        node_taints=NODE_TAINTS,
    )
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def exchanges(kube: KubeEmulator) -> Iterator[Callable[..., Exchange]]:
    """Start a fresh exchange (a new replay: every captured stream from the start) at a speed;
    with `clients`, nothing streams before that many connections have come."""
    started: list[Exchange] = []

    def start(speed: float, clients: int = 1) -> Exchange:
        ex = start_exchange(kube, speed, clients)
        started.append(ex)
        return ex

    yield start
    for ex in started:
        ex.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if rep.failed:
        item.e2e_failed = True  # type: ignore[attr-defined]
    return rep


@pytest.fixture(autouse=True)
def _diagnostics_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not getattr(request.node, "e2e_failed", False):
        return
    op: OperatorProcess | None = request.getfixturevalue("operator") if "operator" in request.fixturenames else None
    r: PodRunner | None = request.getfixturevalue("runner") if "runner" in request.fixturenames else None
    if op is not None:
        sys.stderr.write(f"--- operator log (tail) ---\n{op.log()[-6000:]}\n")
    if r is not None:
        for sb in r.pods():
            sys.stderr.write(describe(sb) + "\n" + r.logs(sb, tail=2500) + "\n")
