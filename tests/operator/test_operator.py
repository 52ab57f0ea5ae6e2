"""The real operator (a `python -m svoe.operator` process) against the emulated API server.

The tests act like kubectl and the kubelet: they create and edit objects over HTTP and report
pod readiness through pods/status. Every namespace is fresh, so the tests are independent while
sharing one operator process (its start costs seconds).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from svoe.testing.kube import CONFIGMAPS, PODS, SERVICES, KubeEmulator
from svoe.testing.operator import OperatorProcess
from tests.operator.conftest import (
    DATAFEEDS,
    condition,
    datafeed,
    event_reasons,
    has_condition,
    mark_all_ready,
    pods_of,
)

SHARD = "svoe.io/shard"


def names(objs: list[dict]) -> set[str]:  # type: ignore[type-arg]
    return {o["metadata"]["name"] for o in objs}


def by_shard(pods: list[dict]) -> dict[str, list[str]]:  # type: ignore[type-arg]
    out: dict[str, list[str]] = {}
    for p in pods:
        out.setdefault(p["metadata"]["labels"][SHARD], []).append(p["metadata"]["name"])
    return out


def test_create_makes_children_with_owner_refs_and_turns_ready(
    kube: KubeEmulator, alive_operator: OperatorProcess
) -> None:
    ns = "create"
    df = kube.create(DATAFEEDS, datafeed("feed", ["BTC-USDT", "ETH-USDT", "NKN-USDT"], per_pod=2), ns)
    uid = df["metadata"]["uid"]
    pods = kube.wait_for(lambda: len(pods_of(kube, ns, "feed")) == 2 and pods_of(kube, ns, "feed"), what="2 pods")
    cms = kube.list(CONFIGMAPS, ns)
    svcs = kube.list(SERVICES, ns)
    # One configmap per shard revision, shared by the revision's replicas: feed-0-r0-REV uses feed-0-REV.
    assert names(cms) == {n.replace("-r0-", "-") for n in names(pods)}
    assert names(svcs) == {"feed-0", "feed-1"}
    for obj in pods + cms + svcs:
        refs = obj["metadata"]["ownerReferences"]
        assert refs == [
            {
                "apiVersion": "svoe.io/v1alpha1",
                "kind": "DataFeed",
                "name": "feed",
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "svoe-operator"
        assert labels["svoe.io/datafeed"] == "feed"
    assert sorted(by_shard(pods)) == ["0", "1"]

    # Not ready yet: the pods are Pending, as the API server creates them.
    obj = kube.wait_for(lambda: has_condition(kube, ns, "feed", "Progressing", "True"), what="Progressing")
    assert condition(obj, "Ready")["status"] == "False"  # type: ignore[index]
    status = obj["status"]
    assert [s["symbols"] for s in status["shards"]] == [["BTC-USDT", "ETH-USDT"], ["NKN-USDT"]]
    assert status["shardCount"] == 2 and status["symbolCount"] == 3

    mark_all_ready(kube, ns, "feed")  # what the kubelet reports once the probes pass
    obj = kube.wait_for(lambda: has_condition(kube, ns, "feed", "Ready", "True"), what="Ready")
    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"] == 1
    assert {s["phase"] for s in status["shards"]} == {"Ready"}
    assert {s["pod"] for s in status["shards"]} == names(pods)
    assert condition(obj, "Progressing")["status"] == "False"  # type: ignore[index]
    assert condition(obj, "Degraded")["status"] == "False"  # type: ignore[index]
    assert condition(obj, "InvalidSpec")["status"] == "False"  # type: ignore[index]
    expected = ("Accepted", "ShardsAssigned", "CreatedService", "CreatedConfigMap", "CreatedPod", "Ready")
    event_reasons(kube, ns, "feed", *expected)
    kube.wait_for(lambda: event_reasons(kube, ns, "feed").count("CreatedPod") == 2 or None, what="2 CreatedPod")

    metrics = alive_operator.metrics()
    assert 'svoe_datafeed_ready{datafeed="feed",namespace="create"} 1.0' in metrics
    assert 'svoe_datafeed_shards{datafeed="feed",namespace="create"} 2.0' in metrics
    assert 'svoe_datafeed_degraded{datafeed="feed",namespace="create"} 0.0' in metrics
    assert 'svoe_reconcile_duration_seconds_count{handler="reconcile"}' in metrics


def test_update_replaces_only_the_affected_shard_make_before_break(
    kube: KubeEmulator, alive_operator: OperatorProcess
) -> None:
    ns = "update"
    kube.create(
        DATAFEEDS, datafeed("feed", ["A1-USDT", "B1-USDT", "C1-USDT", "D1-USDT", "E1-USDT", "F1-USDT"], per_pod=2), ns
    )
    kube.wait_for(lambda: len(pods_of(kube, ns, "feed")) == 3, what="3 pods")
    mark_all_ready(kube, ns, "feed")
    kube.wait_for(lambda: has_condition(kube, ns, "feed", "Ready", "True"), what="Ready")
    before = by_shard(pods_of(kube, ns, "feed"))
    (old_pod,) = before["1"]

    # D1 leaves shard 1, G1 takes its place: shards 0 and 2 must not notice.
    kube.patch(
        DATAFEEDS, ns, "feed", {"spec": {"symbols": ["A1-USDT", "B1-USDT", "C1-USDT", "E1-USDT", "F1-USDT", "G1-USDT"]}}
    )
    during = kube.wait_for(
        lambda: len(by_shard(pods_of(kube, ns, "feed"))["1"]) == 2 and by_shard(pods_of(kube, ns, "feed")),
        what="a second pod for shard 1",
    )
    (new_pod,) = set(during["1"]) - {old_pod}
    obj = kube.wait_for(lambda: has_condition(kube, ns, "feed", "Progressing", "True"), what="Progressing")
    assert condition(obj, "Progressing")["reason"] == "RollingOut"  # type: ignore[index]
    shard1 = next(s for s in obj["status"]["shards"] if s["index"] == 1)
    assert shard1 == {**shard1, "symbols": ["C1-USDT", "G1-USDT"], "pod": new_pod, "phase": "RollingOut"}

    # The old pod keeps collecting while the new one starts; nothing else is touched.
    time.sleep(1.5)
    now = by_shard(pods_of(kube, ns, "feed"))
    assert set(now["1"]) == {old_pod, new_pod}
    assert now["0"] == before["0"] and now["2"] == before["2"]

    kube.set_pod_ready(ns, new_pod)
    kube.wait_for(lambda: by_shard(pods_of(kube, ns, "feed"))["1"] == [new_pod], what="the old pod gone")
    obj = kube.wait_for(lambda: has_condition(kube, ns, "feed", "Ready", "True"), what="Ready again")
    assert obj["status"]["observedGeneration"] == 2
    after = by_shard(pods_of(kube, ns, "feed"))
    assert after == {"0": before["0"], "1": [new_pod], "2": before["2"]}

    # Make-before-break, from the API server's own event log: the old pod was deleted only
    # after the new pod reported Ready; the untouched shards' pods were created once, never deleted.
    timeline = [(rv, typ, o) for rv, typ, o in kube.timeline(PODS) if o["metadata"].get("namespace") == ns]
    ready_rv = min(
        rv
        for rv, typ, o in timeline
        if o["metadata"]["name"] == new_pod
        and typ == "MODIFIED"
        and any(c["type"] == "Ready" and c["status"] == "True" for c in o["status"].get("conditions", []))
    )
    deleted_rv = next(rv for rv, typ, o in timeline if o["metadata"]["name"] == old_pod and typ == "DELETED")
    assert ready_rv < deleted_rv
    for pod in before["0"] + before["2"]:
        assert [typ for _, typ, o in timeline if o["metadata"]["name"] == pod and typ != "MODIFIED"] == ["ADDED"]
    # The old configmap went with the old pod.
    kube.wait_for(lambda: old_pod not in names(kube.list(CONFIGMAPS, ns)), what="old configmap deleted")
    event_reasons(kube, ns, "feed", "RolloutStarted", "RolloutComplete", "SpecChanged", "DeletedPod")


def test_deleted_or_edited_children_are_restored(kube: KubeEmulator, alive_operator: OperatorProcess) -> None:
    ns = "drift"
    kube.create(DATAFEEDS, datafeed("feed", ["BTC-USDT"]), ns)
    (pod,) = kube.wait_for(lambda: pods_of(kube, ns, "feed"), what="a pod")
    name = pod["metadata"]["name"]
    mark_all_ready(kube, ns, "feed")
    kube.wait_for(lambda: has_condition(kube, ns, "feed", "Ready", "True"), what="Ready")

    t0 = time.monotonic()
    kube.delete(PODS, ns, name)
    recreated = kube.wait_for(lambda: kube.try_get(PODS, ns, name), timeout=10, what="the pod recreated")
    assert recreated["metadata"]["uid"] != pod["metadata"]["uid"]
    assert time.monotonic() - t0 < 10
    # Until the new pod is ready the shard has no serving pod: Degraded, not Ready.
    obj = kube.wait_for(lambda: has_condition(kube, ns, "feed", "Degraded", "True"), what="Degraded")
    assert condition(obj, "Degraded")["reason"] == "ShardLost"  # type: ignore[index]
    kube.set_pod_ready(ns, name)
    kube.wait_for(lambda: has_condition(kube, ns, "feed", "Degraded", "False"), what="not Degraded")

    cm_name = recreated["spec"]["volumes"][0]["configMap"]["name"]
    cm = kube.get(CONFIGMAPS, ns, cm_name)
    kube.patch(CONFIGMAPS, ns, cm_name, {"data": {"datafeed.yaml": "edited by hand", "extra": "x"}})
    kube.wait_for(
        lambda: kube.get(CONFIGMAPS, ns, cm_name)["data"] == cm["data"], timeout=10, what="configmap restored"
    )

    kube.delete(SERVICES, ns, "feed-0")
    kube.wait_for(lambda: kube.try_get(SERVICES, ns, "feed-0"), timeout=10, what="service recreated")

    # Removing the operator's labels hides a pod from its watch; it is found and relabelled.
    kube.patch(PODS, ns, name, {"metadata": {"labels": {"app.kubernetes.io/managed-by": None}}})
    kube.wait_for(
        lambda: kube.get(PODS, ns, name)["metadata"]["labels"].get("app.kubernetes.io/managed-by"),
        timeout=10,
        what="labels restored",
    )
    assert len(pods_of(kube, ns, "feed")) == 1
    event_reasons(kube, ns, "feed", "DriftRestored")


def test_deleting_the_datafeed_removes_its_children(kube: KubeEmulator, alive_operator: OperatorProcess) -> None:
    ns = "delete"
    kube.create(DATAFEEDS, datafeed("feed", ["BTC-USDT", "ETH-USDT"], per_pod=1), ns)
    kube.create(DATAFEEDS, datafeed("other", ["BTC-USDT"]), ns)
    kube.wait_for(lambda: len(pods_of(kube, ns, "feed")) == 2 and pods_of(kube, ns, "other"), what="pods")
    obj = kube.get(DATAFEEDS, ns, "feed")
    assert "svoe.io/operator" in obj["metadata"]["finalizers"]

    kube.delete(DATAFEEDS, ns, "feed")
    kube.wait_for(lambda: kube.try_get(DATAFEEDS, ns, "feed") is None, what="the DataFeed gone")
    # The emulator has no garbage collector here: the operator itself removed every child.
    assert pods_of(kube, ns, "feed") == []
    assert kube.list(CONFIGMAPS, ns, "svoe.io/datafeed=feed") == []
    assert kube.list(SERVICES, ns, "svoe.io/datafeed=feed") == []
    assert len(pods_of(kube, ns, "other")) == 1, "another DataFeed's pod is untouched"
    metrics = alive_operator.metrics()
    assert 'svoe_datafeed_ready{datafeed="feed",namespace="delete"}' not in metrics
    assert 'svoe_datafeed_ready{datafeed="other",namespace="delete"}' in metrics


def test_invalid_spec_reports_invalidspec_without_pods_or_retries(
    kube: KubeEmulator, alive_operator: OperatorProcess
) -> None:
    ns = "invalid"
    # As if the CRD were older than the operator (or installed without its schema): the API
    # server lets these through, so the operator is the last line of defence.
    kube.call(lambda s: setattr(s, "validate_custom_resources", False))
    try:
        bad = {
            "exchange": datafeed("exchange", ["BTC-USDT"], exchange="NOPE"),
            "channel": datafeed("channel", ["BTC-USDT"], channels=["trades", "funding"]),
            "symbol": datafeed("symbol", ["btc_usdt"]),
        }
        for df in bad.values():
            kube.create(DATAFEEDS, df, ns)
    finally:
        kube.call(lambda s: setattr(s, "validate_custom_resources", True))
    expected = {
        "exchange": "spec.exchange: unknown exchange 'NOPE'",
        "channel": "BINANCE does not offer ['funding']",
        "symbol": "malformed symbol 'btc_usdt'",
    }
    for name, text in expected.items():
        obj = kube.wait_for(lambda n=name: has_condition(kube, ns, n, "InvalidSpec", "True"), what=f"{name} invalid")
        assert text in condition(obj, "InvalidSpec")["message"]  # type: ignore[index]
        assert condition(obj, "Ready")["status"] == "False"  # type: ignore[index]

    # Several resync periods later: no pods, one event per DataFeed, the operator still up.
    time.sleep(6)
    assert kube.list(PODS, ns) == []
    for name in expected:
        assert event_reasons(kube, ns, name).count("InvalidSpec") == 1
    assert alive_operator.alive

    # Fixing the spec clears InvalidSpec and creates the pods.
    kube.patch(DATAFEEDS, ns, "exchange", {"spec": {"exchange": "BINANCE"}})
    kube.wait_for(lambda: has_condition(kube, ns, "exchange", "InvalidSpec", "False"), what="valid again")
    kube.wait_for(lambda: pods_of(kube, ns, "exchange"), what="pods after the fix")


def test_operator_killed_mid_reconcile_restarts_without_duplicates(
    kube: KubeEmulator, alive_operator: OperatorProcess
) -> None:
    ns = "restart"
    symbols = [f"S{i}-USDT" for i in range(12)]
    # Pod creations hang in the API server; the operator dies with them in flight. The server
    # still completes them after the client is gone, as a real API server does.
    kube.close_gate(PODS, "POST")
    try:
        kube.create(DATAFEEDS, datafeed("feed", symbols, per_pod=3), ns)
        kube.wait_for(lambda: kube.held(PODS, "POST") >= 4, what="pod creations in flight")
        assert len(kube.list(CONFIGMAPS, ns)) == 4
        alive_operator.stop(signal.SIGKILL)
    finally:
        kube.open_gate(PODS, "POST")
    alive_operator.start()
    kube.wait_for(lambda: len(pods_of(kube, ns, "feed")) == 4, what="4 pods")
    mark_all_ready(kube, ns, "feed")
    obj = kube.wait_for(lambda: has_condition(kube, ns, "feed", "Ready", "True"), timeout=30, what="Ready")

    assert [s["symbols"] for s in obj["status"]["shards"]] == [symbols[i : i + 3] for i in range(0, 12, 3)]
    pods = pods_of(kube, ns, "feed")
    assert sorted(by_shard(pods)) == ["0", "1", "2", "3"] and all(len(v) == 1 for v in by_shard(pods).values())
    assert len(kube.list(CONFIGMAPS, ns)) == 4 and len(kube.list(SERVICES, ns)) == 4
    # Every pod name was added exactly once in the server's history: nothing was duplicated.
    added = [
        o["metadata"]["name"]
        for _, typ, o in kube.timeline(PODS)
        if typ == "ADDED" and o["metadata"].get("namespace") == ns
    ]
    assert sorted(added) == sorted(names(pods))


KUBECTL = shutil.which("kubectl")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "datafeed.yaml"


@pytest.mark.skipif(KUBECTL is None, reason="no kubectl binary on this machine (PATH has none)")
def test_kubectl_apply_examples_and_get_df_shows_the_printer_columns(
    kube: KubeEmulator, alive_operator: OperatorProcess
) -> None:
    assert KUBECTL is not None
    ns = "kubectl"

    def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KUBECTL, "-n", ns, *args], env=kube.env(), input=stdin, capture_output=True, text=True, timeout=120
        )

    r = kubectl("apply", "-f", str(CRD_FILE))
    assert r.returncode == 0, r.stderr
    r = kubectl("apply", "-f", str(EXAMPLES))
    assert r.returncode == 0, r.stderr
    examples = {yaml.safe_load(p.read_text())["metadata"]["name"]: p for p in EXAMPLES.glob("*.yaml")}
    for name in examples:
        assert f"datafeed.svoe.io/{name} created" in r.stdout
    kube.wait_for(
        lambda: all(has_condition(kube, ns, n, "Progressing", "True") for n in examples),
        timeout=30,
        what="the operator to pick up the examples",
    )

    def table() -> dict[str, list[str]]:
        r = kubectl("get", "df")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        # kubectl pads columns with 3 spaces; LAST EVENT has one inside.
        header = ["NAME", "EXCHANGE", "SYMBOLS", "SHARDS", "READY", "STALE", "RATE", "LAST EVENT", "GAPS", "AGE"]
        assert re.split(r"\s{2,}", lines[0].strip()) == header
        return {line.split()[0]: re.split(r"\s{2,}", line.strip()) for line in lines[1:]}

    rows = table()
    assert set(rows) == set(examples)
    demo = rows["binance-demo"]
    assert demo[1:5] == ["BINANCE", "4", "1", "False"]
    assert rows["coinbase-spot"][2:5] == ["6", "3", "False"]  # 6 symbols, 2 per pod
    for name in examples:
        mark_all_ready(kube, ns, name)
    kube.wait_for(lambda: table()["binance-demo"][4] == "True", timeout=20, what="READY True in kubectl")

    by_category = kubectl("get", "svoe")
    assert by_category.returncode == 0 and "binance-demo" in by_category.stdout

    # The API server (here: the CRD's CEL rule) refuses what the operator could not run.
    bad = yaml.safe_load(examples["binance-demo"].read_text())
    bad["metadata"]["name"] = "bad-channels"
    bad["spec"]["channels"] = ["trades", "funding"]
    r = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad))
    assert r.returncode != 0
    assert "BINANCE does not offer every listed channel" in r.stderr
