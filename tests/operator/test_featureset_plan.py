"""FeatureSet render, plan and status, pure: no server."""

from __future__ import annotations

from typing import Any

import pytest

from svoe.api.featureset import FeatureSet
from svoe.operator.config import ConfigError, OperatorConfig
from svoe.operator.featureset_plan import plan_featureset
from svoe.operator.featureset_render import featurizer_name, render_featurizer
from svoe.operator.featureset_status import blocked_notice, build_featureset_status
from svoe.operator.health import parse_featurizer_stats
from svoe.operator.observe import observe
from svoe.operator.status import condition

CONFIG = OperatorConfig(feed_image="svoe-feedpod:test")
NOW = "2026-01-01T00:00:10Z"


def featureset(symbols: list[str] | None = None, **spec: Any) -> FeatureSet:
    doc = {
        "apiVersion": "svoe.io/v1alpha1",
        "kind": "FeatureSet",
        "metadata": {"name": "feat", "namespace": "ns"},
        "spec": {
            "exchange": "BINANCE",
            "symbols": symbols or ["BTC-USDT"],
            "source": "feed",
            "features": [{"name": "mid", "kind": "mid_price"}, {"name": "vwap", "kind": "vwap", "window": "5s"}],
        }
        | spec,
    }
    return FeatureSet.model_validate(doc)


def source(symbols: list[str], per_pod: int = 1, shards: list[int] | None = None, **spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "metadata": {"name": "feed", "namespace": "ns"},
        "spec": {"exchange": "BINANCE", "channels": ["trades", "l2_book"], "symbols": symbols}
        | {"sharding": {"maxSymbolsPerPod": per_pod}}
        | spec,
        "status": {},
    }
    if shards is not None:
        doc["status"]["shards"] = [{"index": i, "symbols": [symbols[0]]} for i in shards]
    return doc


def owned(obj: dict[str, Any], uid: str = "u1", **status: Any) -> Any:
    obj = {**obj, "metadata": {**obj["metadata"], "uid": "c-" + obj["kind"], "resourceVersion": "1"}}
    return observe({**obj, "status": status})


def connect_args(deployment: dict[str, Any]) -> list[str]:
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return [args[i + 1] for i, a in enumerate(args) if a == "--connect"]


def test_the_featurizer_connects_to_every_shard_of_its_source() -> None:
    p = plan_featureset(featureset(), "u1", source(["BTC-USDT", "ETH-USDT"]), [], CONFIG)
    assert p.blocked is None
    assert p.endpoints == ["tcp://feed-0.ns.svc:5555", "tcp://feed-1.ns.svc:5555"]
    assert [(c.verb, c.kind) for c in p.changes] == [("create", "ConfigMap"), ("create", "Service"),
                                                     ("create", "Deployment")]  # fmt: skip
    dep = p.changes[2].body
    assert dep is not None and connect_args(dep) == p.endpoints
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["svoe", "features", "live"]
    assert container["args"][0] == "/etc/svoe/featureset.yaml" and container["args"][-2:] == ["--health-port", "8080"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 8080, "live": 5556}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "FeatureSet"
    assert dep["spec"]["template"]["metadata"]["labels"]["svoe.io/featureset"] == "feat"


def test_recorded_shards_win_and_a_reshard_patches_the_deployment() -> None:
    fs = featureset()
    first = plan_featureset(fs, "u1", source(["BTC-USDT"]), [], CONFIG)
    assert first.rendered is not None
    children = [owned(first.rendered.configmap), owned(first.rendered.service), owned(first.rendered.deployment)]
    assert plan_featureset(fs, "u1", source(["BTC-USDT"]), children, CONFIG).changes == []
    moved = plan_featureset(fs, "u1", source(["BTC-USDT"], shards=[0, 3]), children, CONFIG)
    assert moved.endpoints == ["tcp://feed-0.ns.svc:5555", "tcp://feed-3.ns.svc:5555"]
    (change,) = moved.changes
    assert (change.verb, change.kind) == ("patch", "Deployment")
    assert change.body is not None and connect_args(change.body) == moved.endpoints


def test_a_spec_change_rolls_the_pod_through_the_template_hash() -> None:
    a = render_featurizer(featureset(), "u1", ["tcp://x:1"], CONFIG)
    b = render_featurizer(featureset(interval="2s", features=[{"name": "mid", "kind": "mid_price"}]), "u1",
                          ["tcp://x:1"], CONFIG)  # fmt: skip
    hash_of = lambda d: d.deployment["spec"]["template"]["metadata"]["annotations"]["svoe.io/content-hash"]  # noqa: E731
    assert hash_of(a) != hash_of(b)
    assert featurizer_name("1x") == "fs-1x-featurizer"


@pytest.mark.parametrize(
    ("fs", "src", "field"),
    [
        (featureset(["XRP-USDT"]), source(["BTC-USDT"]), "symbols: XRP-USDT not in the source DataFeed feed"),
        (featureset(exchange="COINBASE"), source(["BTC-USDT"]), "exchange: COINBASE but"),
        (featureset(), source(["BTC-USDT"], channels=["l2_book"]), "features: vwap read trades"),
        (featureset(), source(["BTC-USDT"], live={"bind": "127.0.0.1"}), "source: the DataFeed feed does not serve"),
    ],
)
def test_a_spec_that_does_not_fit_its_source_is_invalid_and_changes_nothing(fs: Any, src: Any, field: str) -> None:
    p = plan_featureset(fs, "u1", src, [], CONFIG)
    assert p.blocked == "InvalidSpec" and p.changes == [] and field in p.message
    status = build_featureset_status(fs, p, {}, 2, None, now=NOW)
    inv = condition(status, "InvalidSpec")
    assert inv is not None and inv["status"] == "True" and field in inv["message"]
    assert (condition(status, "Ready") or {}).get("reason") == "InvalidSpec"
    notice = blocked_notice({}, p)
    assert notice is not None and notice.warning
    assert blocked_notice(status, p) is None  # once per problem


def test_a_missing_source_is_reported_and_nothing_is_invented() -> None:
    p = plan_featureset(featureset(), "u1", None, [], CONFIG)
    assert p.blocked == "SourceNotFound" and p.changes == []
    status = build_featureset_status(featureset(), p, {}, 1, None, now=NOW)
    ready = condition(status, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "SourceNotFound")
    assert (condition(status, "Stale") or {}).get("status") == "Unknown"
    assert "rowsPerSecond" not in status and "lastTick" not in status and "lagSeconds" not in status


def test_status_takes_readiness_from_the_deployment_and_figures_from_stats() -> None:
    fs = featureset()
    first = plan_featureset(fs, "u1", source(["BTC-USDT"]), [], CONFIG)
    assert first.rendered is not None
    dep = owned(first.rendered.deployment, availableReplicas=1)
    p = plan_featureset(fs, "u1", source(["BTC-USDT"]), [dep], CONFIG)
    doc = {"featureSet": "feat", "rowsPerSecond": 2.04, "rows": 20, "lastTick": "2026-01-01T00:00:09Z",
           "lagSeconds": 1.02, "stale": True, "lastSourceEvent": "2026-01-01T00:00:01Z", "lateEvents": 3,
           "sourceEvents": 9, "since": "2026-01-01T00:00:00Z"}  # fmt: skip
    status = build_featureset_status(fs, p, {}, 1, parse_featurizer_stats(doc, 0.0), now=NOW)
    assert (condition(status, "Ready") or {}).get("status") == "True"
    stale = condition(status, "Stale")
    assert stale is not None and (stale["status"], stale["reason"]) == ("True", "SourceSilent")
    assert (status["rowsPerSecond"], status["lagSeconds"], status["lastTick"]) == (2.0, 1.0, "2026-01-01T00:00:09Z")
    assert (status["symbolCount"], status["featureCount"], status["lateEvents"]) == (1, 2, 3)
    assert status["deployment"] == "feat-featurizer" and status["endpoints"] == ["tcp://feed-0.ns.svc:5555"]


def test_featurizer_resources_come_from_the_environment() -> None:
    raw = '{"requests": {"cpu": "50m"}, "limits": {"memory": "2Gi"}}'
    got = OperatorConfig.from_env({"SVOE_FEATURIZER_RESOURCES": raw}).resources["featurizer"]
    assert got.as_k8s() == {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
    with pytest.raises(ConfigError, match="SVOE_FEATURIZER_RESOURCES"):
        OperatorConfig.from_env({"SVOE_FEATURIZER_RESOURCES": "[1]"})
