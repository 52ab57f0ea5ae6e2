"""Two operator replicas with kopf peering (HA): one works, the other stands by and takes over.

Also covers the namespaced mode (`--namespace`), which the other tests do not use.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from svoe.testing.kube import PODS, KubeEmulator
from svoe.testing.operator import OperatorProcess
from tests.operator.conftest import DATAFEEDS, datafeed, has_condition, mark_all_ready, pods_of

NS = "peer"
PEERINGS = ("kopf.dev", "v1", "kopfpeerings")
LIFETIME = 4  # seconds a replica's heartbeat counts; production keeps kopf's 60
KOPF_PEERING_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "kopfpeerings.kopf.dev"},
    "spec": {
        "group": "kopf.dev",
        "scope": "Namespaced",
        "names": {"kind": "KopfPeering", "plural": "kopfpeerings", "singular": "kopfpeering"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {"status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                    }
                },
            }
        ],
    },
}


@pytest.fixture
def replicas(kube: KubeEmulator, tmp_path: Path) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    kube.apply_crd(KOPF_PEERING_CRD)
    kube.create(PEERINGS, {"metadata": {"name": "svoe"}}, NS)
    env = {"SVOE_PEERING_LIFETIME": str(LIFETIME)}
    high = OperatorProcess(kube, tmp_path / "high", **env)
    low = OperatorProcess(kube, tmp_path / "low", **env)
    for op in (high, low):
        op.log_dir.mkdir()
    high.start("--namespace", NS, "--peering", "svoe", "--priority", "200")
    low.start("--namespace", NS, "--peering", "svoe", "--priority", "100")
    yield high, low
    for op in (high, low):
        op.stop()


def test_only_the_highest_priority_replica_works_and_the_other_takes_over(
    kube: KubeEmulator, replicas: tuple[OperatorProcess, OperatorProcess]
) -> None:
    high, low = replicas

    def peers() -> set[int]:
        status = kube.get(PEERINGS, NS, "svoe").get("status") or {}
        return {int(p["priority"]) for p in status.values() if isinstance(p, dict) and "priority" in p}

    kube.wait_for(lambda: peers() == {100, 200}, timeout=30, what="both replicas in the peering object")
    kube.create(DATAFEEDS, datafeed("feed", ["BTC-USDT", "ETH-USDT"], per_pod=1), NS)
    kube.wait_for(lambda: len(pods_of(kube, NS, "feed")) == 2, what="2 pods")
    mark_all_ready(kube, NS, "feed")
    kube.wait_for(lambda: has_condition(kube, NS, "feed", "Ready", "True"), what="Ready")
    added = [o["metadata"]["name"] for _, t, o in kube.timeline(PODS) if t == "ADDED"]
    assert len(added) == len(set(added)) == 2
    passes = 'svoe_reconcile_duration_seconds_count{handler="reconcile"}'
    assert passes in high.metrics()
    assert passes not in low.metrics(), "the standby replica must not reconcile"

    high.stop(signal.SIGKILL)
    kube.patch(DATAFEEDS, NS, "feed", {"spec": {"symbols": ["BTC-USDT", "ETH-USDT", "SOL-USDT"]}})
    kube.wait_for(lambda: len(pods_of(kube, NS, "feed")) == 3, timeout=LIFETIME + 20, what="the standby to act")
    assert "Resuming operations after the pause" in low.log()
    # Its update handler may have made the pod before its first periodic pass: wait for that pass.
    kube.wait_for(lambda: passes in low.metrics(), timeout=30, what="the standby's reconcile passes")
    mark_all_ready(kube, NS, "feed")
    obj = kube.wait_for(lambda: has_condition(kube, NS, "feed", "Ready", "True"), what="Ready after failover")
    assert obj["status"]["shardCount"] == 3
