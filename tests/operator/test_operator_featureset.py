"""The operator reconciles FeatureSets, against the emulated API server and the real kubectl.

No controller runs Deployments in the emulator: the test reports the Deployment available and
stands in for its pod (a labelled pod whose /stats a small HTTP server answers, through the pod
proxy), as tests/operator/test_operator_replicas.py does for the collectors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from svoe.testing.kube import DEPLOYMENTS, PODS, KubeEmulator
from svoe.testing.operator import OperatorProcess
from tests.operator.conftest import DATAFEEDS, FEATURESETS, condition, datafeed, event_reasons
from tests.operator.test_operator_replicas import KUBECTL, Collector, kubectl

NS = "features"


@pytest.fixture(scope="module")
def fs_operator(kube: KubeEmulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        kube, tmp_path_factory.mktemp("operator"), SVOE_HEALTH_INTERVAL_SECONDS="0.3", SVOE_RESYNC_SECONDS="0.5"
    )
    op.start()
    yield op
    op.stop()


def featureset(name: str, symbols: list[str], source: str = "feed") -> dict[str, Any]:
    return {
        "apiVersion": "svoe.io/v1alpha1",
        "kind": "FeatureSet",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "exchange": "BINANCE",
            "symbols": symbols,
            "source": source,
            "features": [{"name": "mid", "kind": "mid_price"}, {"name": "vwap_5s", "kind": "vwap", "window": "5s"}],
        },
    }


def apply(kube: KubeEmulator, doc: dict[str, Any]) -> None:
    r = kubectl(kube, "apply", "-f", "-", stdin=json.dumps(doc))
    assert r.returncode == 0, r.stderr


def connect_args(kube: KubeEmulator, name: str) -> list[str] | None:
    dep = kube.try_get(DEPLOYMENTS, NS, f"{name}-featurizer")
    if dep is None:
        return None
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    return [args[i + 1] for i, a in enumerate(args) if a == "--connect"]


def fs_condition(kube: KubeEmulator, name: str, type_: str) -> dict[str, Any]:
    return condition(kube.get(FEATURESETS, NS, name), type_) or {}


@pytest.mark.skipif(KUBECTL is None, reason="needs kubectl")
def test_featureset_follows_its_source_and_reports_the_featurizer(
    kube: KubeEmulator, fs_operator: OperatorProcess
) -> None:
    # The source appears after the FeatureSet: SourceNotFound first, no Deployment.
    apply(kube, featureset("feat", ["BTC-USDT"]))
    kube.wait_for(lambda: fs_condition(kube, "feat", "Ready").get("reason") == "SourceNotFound", what="SourceNotFound")
    assert kube.try_get(DEPLOYMENTS, NS, "feat-featurizer") is None
    event_reasons(kube, NS, "feat", "SourceNotFound")

    feed = datafeed("feed", ["BTC-USDT", "ETH-USDT"], per_pod=1)
    feed["metadata"]["namespace"] = NS
    apply(kube, feed)
    two = [f"tcp://feed-{i}.{NS}.svc:5555" for i in (0, 1)]
    kube.wait_for(lambda: connect_args(kube, "feat") == two, what="--connect per shard")
    assert kube.try_get(("", "v1", "configmaps"), NS, "feat-featurizer") is not None
    assert kube.try_get(("", "v1", "services"), NS, "feat-featurizer") is not None

    # The DataFeed gains a symbol: a third shard, and the featurizer's args follow.
    feed["spec"]["symbols"].append("SOL-USDT")
    apply(kube, feed)
    three = [f"tcp://feed-{i}.{NS}.svc:5555" for i in (0, 1, 2)]
    kube.wait_for(lambda: connect_args(kube, "feat") == three, what="--connect follows the reshard")

    # Available and reporting: Ready, figures from the featurizer's /stats, Stale from it too.
    kube.patch(DEPLOYMENTS, NS, "feat-featurizer", {"status": {"replicas": 1, "availableReplicas": 1}}, sub="status")
    stats = Collector()
    stats.answer = {"featureSet": "feat", "rowsPerSecond": 2.0, "rows": 40, "lastTick": "2026-01-01T00:00:09Z",
                    "lagSeconds": 1.5, "stale": False, "lastSourceEvent": "2026-01-01T00:00:09Z", "lateEvents": 0,
                    "sourceEvents": 99, "since": "2026-01-01T00:00:00Z"}  # fmt: skip
    pod_labels = {"app.kubernetes.io/name": "svoe", "app.kubernetes.io/component": "featurizer",
                  "app.kubernetes.io/managed-by": "svoe-operator", "svoe.io/featureset": "feat"}  # fmt: skip
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "feat-featurizer-abc", "labels": pod_labels},
           "spec": {"containers": [{"name": "featurizer", "image": "x"}]}}  # fmt: skip
    kube.create(PODS, pod, NS)
    kube.call(lambda s: setattr(s, "pod_address", lambda _ns, _pod, _port: ("127.0.0.1", stats.port)))
    kube.set_pod_ready(NS, "feat-featurizer-abc")

    def reported() -> dict[str, Any] | None:
        st = kube.get(FEATURESETS, NS, "feat").get("status") or {}
        return st if st.get("rowsPerSecond") == 2.0 else None

    st = kube.wait_for(reported, what="featurizer figures in the status")
    assert (st["lagSeconds"], st["lastTick"], st["symbolCount"], st["featureCount"]) == (
        1.5,
        "2026-01-01T00:00:09Z",
        1,
        2,
    )
    assert fs_condition(kube, "feat", "Ready")["status"] == "True"
    assert fs_condition(kube, "feat", "Stale")["status"] == "False"
    stats.answer = {**stats.answer, "stale": True}
    kube.wait_for(lambda: fs_condition(kube, "feat", "Stale").get("reason") == "SourceSilent", what="SourceSilent")

    table = kubectl(kube, "get", "featuresets", "-n", NS)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    for col in ("EXCHANGE", "SOURCE", "INTERVAL", "SYMBOLS", "READY", "STALE", "RATE", "LAST TICK", "AGE"):
        assert col in header, table.stdout
    assert row.split()[:5] == ["feat", "BINANCE", "feed", "1s", "1"], table.stdout
    wide = kubectl(kube, "get", "fs", "-n", NS, "-o", "wide")
    assert "FEATURES" in wide.stdout.splitlines()[0], wide.stdout

    # A symbol the source does not collect: InvalidSpec naming spec.symbols, and no Deployment.
    apply(kube, featureset("bad", ["XRP-USDT"]))
    kube.wait_for(lambda: fs_condition(kube, "bad", "InvalidSpec").get("status") == "True", what="InvalidSpec")
    message = fs_condition(kube, "bad", "InvalidSpec")["message"]
    assert message.startswith("symbols: XRP-USDT not in the source DataFeed feed"), message
    event_reasons(kube, NS, "bad", "InvalidSpec")
    assert kube.try_get(DEPLOYMENTS, NS, "bad-featurizer") is None

    # What only the model can check (a window of whole intervals): InvalidSpec naming the field.
    odd = featureset("odd", ["BTC-USDT"])
    odd["spec"]["interval"] = "2s"
    apply(kube, odd)
    kube.wait_for(lambda: fs_condition(kube, "odd", "InvalidSpec").get("status") == "True", what="InvalidSpec")
    assert "spec.features[1].window" in fs_condition(kube, "odd", "InvalidSpec")["message"]
    assert kube.try_get(DEPLOYMENTS, NS, "odd-featurizer") is None

    # Deleted: the operator removes its featurizer (the emulator runs no garbage collector).
    kube.delete(FEATURESETS, NS, "feat")
    kube.wait_for(lambda: kube.try_get(DEPLOYMENTS, NS, "feat-featurizer") is None, what="featurizer deleted")
    kube.delete(DATAFEEDS, NS, "feed")
