"""The operator process with replicas and data health, against the emulated API server and kubectl.

The collectors' `/stats` (docs/contracts.md) are served by small HTTP servers standing in for the
feed pods' collectors, reached through the emulator's pod proxy as the API server would reach a
pod; the real collector's endpoint is tested with a real collector (tests/test_stats_endpoint.py) and
the whole chain in the e2e.
"""

from __future__ import annotations

import datetime
import http.server
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from svoe.testing.kube import PODS, KubeEmulator
from svoe.testing.operator import OperatorProcess
from tests.operator.conftest import DATAFEEDS, condition, datafeed, event_reasons, pods_of

KUBECTL = shutil.which("kubectl")


class Collector:
    """A stand-in collector's /stats, answering what the test sets."""

    def __init__(self) -> None:
        self.answer: dict[str, Any] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(outer.answer).encode()
                self.send_response(200 if self.path == "/stats" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def report(self, age: float, rate: float, gaps: int = 0, backlog: int = 0) -> None:
        last = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=age)
        self.answer = {
            "lastEventTime": last.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "eventsPerSecond": rate,
            "gapsLastHour": gaps,
            "backlog": backlog,
            "since": "2026-01-01T00:00:00.000Z",
        }


@pytest.fixture(scope="module")
def fast_operator(kube: KubeEmulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        kube,
        tmp_path_factory.mktemp("operator"),
        SVOE_HEALTH_INTERVAL_SECONDS="0.3",
        SVOE_STALE_AFTER_SECONDS="30",
        SVOE_RESYNC_SECONDS="0.5",
    )
    op.start()
    yield op
    op.stop()


def kubectl(kube: KubeEmulator, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert KUBECTL is not None
    return subprocess.run(
        [KUBECTL, *args], input=stdin, capture_output=True, text=True, env=kube.env(), timeout=30, check=False
    )


def status(kube: KubeEmulator, ns: str, name: str) -> dict[str, Any]:
    return dict(kube.get(DATAFEEDS, ns, name).get("status") or {})


@pytest.mark.skipif(KUBECTL is None, reason="needs kubectl")
def test_replicas_report_health_and_kubectl_shows_it(
    kube: KubeEmulator, fast_operator: OperatorProcess, tmp_path: Path
) -> None:
    ns = "replicas"
    doc = datafeed("rep", ["BTC-USDT", "ETH-USDT"], per_pod=2)
    doc["metadata"]["namespace"] = ns
    doc["spec"]["replicas"] = 2
    r = kubectl(kube, "apply", "-f", "-", stdin=json.dumps(doc))
    assert r.returncode == 0, r.stderr
    pods = kube.wait_for(lambda: len(pods_of(kube, ns, "rep")) == 2 and pods_of(kube, ns, "rep"), what="2 pods")
    by_replica = {p["metadata"]["labels"]["svoe.io/replica"]: p["metadata"]["name"] for p in pods}
    assert sorted(by_replica) == ["0", "1"]

    collectors = {name: Collector() for name in by_replica.values()}
    ports = {name: c.port for name, c in collectors.items()}
    kube.call(lambda s: setattr(s, "pod_address", lambda _ns, pod, _port: ("127.0.0.1", ports[pod])))
    collectors[by_replica["0"]].report(age=1, rate=250.5, gaps=3, backlog=7)
    collectors[by_replica["1"]].report(age=2, rate=240.0, gaps=1, backlog=12)
    for name in by_replica.values():
        kube.set_pod_ready(ns, name)

    def healthy() -> dict[str, Any] | None:
        st = status(kube, ns, "rep")
        stale = condition({"status": st}, "Stale")
        return st if stale and stale["status"] == "False" and st.get("eventsPerSecond") else None

    st = kube.wait_for(healthy, timeout=20, what="health in the status")
    (shard,) = st["shards"]
    assert (shard["eventsPerSecond"], shard["gapsLastHour"], shard["backlog"]) == (250.5, 1, 12)
    assert {r["replica"]: r["eventsPerSecond"] for r in shard["replicas"]} == {0: 250.5, 1: 240.0}
    assert st["readyReplicas"] == st["replicas"] == 2
    assert condition({"status": st}, "Ready")["status"] == "True"  # type: ignore[index]

    table = kubectl(kube, "get", "df", "-n", ns)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert "RATE" in header and "LAST EVENT" in header and "GAPS" in header, table.stdout
    assert "250.5" in row.split() and "True" in row.split(), table.stdout
    wide = kubectl(kube, "get", "df", "-n", ns, "-o", "wide")
    assert "REPLICAS" in wide.stdout.splitlines()[0], wide.stdout

    # The newest event gets old: Stale, with an event, while nothing else changes.
    for c in collectors.values():
        c.report(age=600, rate=0.0)
    kube.wait_for(
        lambda: (condition({"status": status(kube, ns, "rep")}, "Stale") or {}).get("status") == "True",
        timeout=20,
        what="Stale",
    )
    event_reasons(kube, ns, "rep", "Stale")
    for c in collectors.values():
        c.report(age=1, rate=100.0)

    # One replica down: still Ready (the other covers the shard), Degraded says so.
    kube.set_pod_ready(ns, by_replica["1"], ready=False)

    def degraded_reason() -> str | None:
        d = condition({"status": status(kube, ns, "rep")}, "Degraded")
        return str(d["reason"]) if d and d["status"] == "True" else None

    assert kube.wait_for(degraded_reason, timeout=20, what="Degraded") == "ReplicaDown"
    assert condition({"status": status(kube, ns, "rep")}, "Ready")["status"] == "True"  # type: ignore[index]
    # Both down: never Ready.
    kube.set_pod_ready(ns, by_replica["0"], ready=False)
    kube.wait_for(
        lambda: (condition({"status": status(kube, ns, "rep")}, "Ready") or {}).get("status") == "False",
        timeout=20,
        what="not Ready",
    )
    kube.call(lambda s: setattr(s, "pod_address", None))


@pytest.mark.skipif(KUBECTL is None, reason="needs kubectl")
def test_bad_replicas_and_unschedulable_pods_get_a_clear_message_and_no_storm(
    kube: KubeEmulator, fast_operator: OperatorProcess
) -> None:
    ns = "placement"
    doc = datafeed("nowhere", ["BTC-USDT"])
    doc["metadata"]["namespace"] = ns
    doc["spec"]["replicas"] = 6
    r = kubectl(kube, "apply", "-f", "-", stdin=json.dumps(doc))
    assert r.returncode != 0 and "spec.replicas" in r.stderr and "5" in r.stderr, r.stderr

    doc["spec"]["replicas"] = 1
    doc["spec"]["placement"] = {"nodeSelector": {"pool": "gpu"}}
    assert kubectl(kube, "apply", "-f", "-", stdin=json.dumps(doc)).returncode == 0
    (pod,) = kube.wait_for(lambda: pods_of(kube, ns, "nowhere"), what="a pod")
    assert pod["spec"]["nodeSelector"]["pool"] == "gpu"
    message = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    scheduled = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
    kube.patch(
        PODS, ns, pod["metadata"]["name"], {"status": {"phase": "Pending", "conditions": [scheduled]}}, sub="status"
    )

    def degraded() -> dict[str, Any] | None:
        d = condition({"status": status(kube, ns, "nowhere")}, "Degraded")
        return d if d and d["reason"] == "Unschedulable" else None

    d = kube.wait_for(degraded, timeout=20, what="Degraded: Unschedulable")
    assert message in d["message"]
    assert status(kube, ns, "nowhere")["shards"][0]["phase"] == "Unschedulable"
    # Several resyncs (every 0.5 s) later: the same pod, one Degraded event.
    time.sleep(3)
    (same,) = pods_of(kube, ns, "nowhere")
    assert same["metadata"]["uid"] == pod["metadata"]["uid"], "an unschedulable pod is not recreated"
    assert event_reasons(kube, ns, "nowhere").count("Degraded") == 1
