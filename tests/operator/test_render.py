"""Render functions: what a shard's ConfigMap, Pod and Service look like (docs/contracts.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from svoe.api.datafeed import DataFeed
from svoe.api.load import load_manifest, parse_manifest
from svoe.operator.config import OperatorConfig
from svoe.operator.render import manifest_text, render_shard, service_name, shard_manifest

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
UID = "0b7ee9f2-4cd7-4b3d-9d2a-6c1f1f4e2a10"
CONFIG = OperatorConfig(feed_image="registry.example/svoe/feedpod:1.2.3")


def feed(**spec: Any) -> DataFeed:
    base: dict[str, Any] = {"exchange": "BINANCE", "channels": ["trades", "l2_book"], "symbols": ["BTC-USDT"]}
    doc = {
        "apiVersion": "svoe.io/v1alpha1",
        "kind": "DataFeed",
        "metadata": {"name": "demo", "namespace": "md"},
        "spec": {**base, **spec},
    }
    return parse_manifest(doc)


def containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod["spec"]["containers"]}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_rendered_object_validates_strictly_against_kubernetes_1_33(path: Path) -> None:
    df = load_manifest(path)
    df = df.model_copy(update={"metadata": df.metadata.model_copy(update={"namespace": "md"})})
    objs = [render_shard(df, UID, 0, df.spec.symbols[:2], CONFIG)]
    assert objs
    for o in objs:
        for obj in (o.configmap, o.pod, o.service):
            assert kubernetes_validate.validate(obj, "1.33", strict=True) == "1.33"


def test_strict_validation_catches_a_misspelt_field() -> None:
    # The check above would be worthless if strict validation let unknown fields through.
    pod = render_shard(feed(), UID, 0, ["BTC-USDT"], CONFIG).pod
    pod["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, "1.33", strict=True)


def test_pod_follows_the_contracts() -> None:
    df = feed(storage={"flushIntervalSeconds": 45})
    shard = render_shard(df, UID, 3, ["BTC-USDT", "ETH-USDT"], CONFIG)
    pod = shard.pod
    c = containers(pod)
    assert list(c) == ["redis", "collector", "aggregator"]
    redis_url = "unix:///var/run/svoe/redis.sock"
    manifest = "/etc/svoe/datafeed.yaml"
    feed_args = ["--manifest", manifest, "--redis", redis_url, "--health-host", "0.0.0.0", "--health-port"]
    assert c["collector"]["command"] == ["svoe", "collector"]
    assert c["collector"]["args"] == [*feed_args, "8080", "--log-file", "/tmp/feedhandler.log"]
    assert c["aggregator"]["command"] == ["svoe", "aggregator"]
    assert c["aggregator"]["args"] == [*feed_args, "8081"]
    assert c["redis"]["command"] == ["redis-server", "/etc/svoe/redis.conf"]
    assert c["collector"]["image"] == c["aggregator"]["image"] == "registry.example/svoe/feedpod:1.2.3"
    assert c["redis"]["image"] == "redis:7.4-alpine"
    assert c["collector"]["ports"] == [{"name": "metrics", "containerPort": 8080}]
    assert {"name": "health", "containerPort": 8081} in c["aggregator"]["ports"]
    assert {"name": "live", "containerPort": 5555} in c["aggregator"]["ports"]
    for name, port in (("collector", 8080), ("aggregator", 8081)):
        assert c[name]["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        assert c[name]["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        env = {e["name"]: e["value"] for e in c[name]["env"] if "value" in e}
        assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in c[name]["env"]
        assert env == {
            "PROMETHEUS_MULTIPROC_DIR": "/var/run/svoe/metrics",
            "XDG_CACHE_HOME": "/tmp/cache",
            "SVOE_SHARD": "3",
            "SVOE_DATAFEED": "demo",
        }
        mounts = {m["mountPath"]: m["name"] for m in c[name]["volumeMounts"]}
        assert {"/etc/svoe", "/var/run/svoe", "/var/run/svoe/metrics", "/tmp"} <= set(mounts)
    redis_mounts = {m["mountPath"] for m in c["redis"]["volumeMounts"]}
    assert {"/etc/svoe", "/var/run/svoe", "/data"} <= redis_mounts
    assert "exec" in c["redis"]["readinessProbe"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == shard.configmap_name
    for shared in ("run", "metrics", "data", "tmp"):
        assert "emptyDir" in volumes[shared]
    for ct in c.values():
        assert ct["securityContext"] == {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        res = ct["resources"]
        assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["cpu"] and res["limits"]["memory"]
    sec = pod["spec"]["securityContext"]
    assert sec["runAsNonRoot"] is True and sec["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["spec"]["terminationGracePeriodSeconds"] > 45 + 30
    assert c["redis"]["lifecycle"]["preStop"]["exec"]["command"][0] == "sh"
    assert pod["spec"]["nodeSelector"] == {"svoe.io/node-role": "feed"}
    assert pod["spec"]["tolerations"] == [
        {"key": "svoe.io/feed", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    assert pod["metadata"]["annotations"]["svoe.io/symbols"] == "BTC-USDT,ETH-USDT"


def test_labels_and_owner_references_on_every_child() -> None:
    shard = render_shard(feed(), UID, 1, ["BTC-USDT"], CONFIG)
    for obj in (shard.configmap, shard.pod, shard.service):
        labels = obj["metadata"]["labels"]
        assert (
            labels
            | {
                "app.kubernetes.io/name": "svoe",
                "app.kubernetes.io/instance": "demo",
                "app.kubernetes.io/component": "feed",
                "app.kubernetes.io/managed-by": "svoe-operator",
                "svoe.io/datafeed": "demo",
                "svoe.io/shard": "1",
            }
            == labels
        )
        assert obj["metadata"]["namespace"] == "md"
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "svoe.io/v1alpha1",
            "kind": "DataFeed",
            "name": "demo",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    spec = shard.service["spec"]
    assert spec["selector"] == {
        "app.kubernetes.io/name": "svoe",
        "app.kubernetes.io/component": "feed",
        "svoe.io/datafeed": "demo",
        "svoe.io/shard": "1",
    }
    assert spec["ports"][0]["port"] == 8080
    assert set(spec["selector"].items()) <= set(shard.pod["metadata"]["labels"].items())


def test_configmap_holds_the_manifest_narrowed_to_the_shard_and_the_redis_conf() -> None:
    df = feed(symbols=["BTC-USDT", "ETH-USDT", "SOL-USDT"], book={"depth": 50})
    cm = render_shard(df, UID, 0, ["ETH-USDT"], CONFIG).configmap
    shard_feed = parse_manifest(yaml.safe_load(cm["data"]["datafeed.yaml"]))
    assert shard_feed.spec.symbols == ["ETH-USDT"]
    assert shard_feed.spec.model_copy(update={"symbols": df.spec.symbols}) == df.spec
    assert shard_feed.metadata.name == "demo" and shard_feed.metadata.namespace == "md"
    conf = dict(line.split(" ", 1) for line in cm["data"]["redis.conf"].splitlines() if line and line[0] != "#")
    assert conf["port"] == "0"
    assert conf["unixsocket"] == "/var/run/svoe/redis.sock"
    assert conf["dir"] == "/data"
    assert conf["appendonly"] == "yes" and conf["appendfsync"] == "always"
    assert conf["maxmemory-policy"] == "noeviction"
    assert 0 < int(conf["maxmemory"]) < 2**30  # below the container's 1Gi limit


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_manifests_are_the_text_the_pure_python_emitter_writes(path: Path) -> None:
    # libyaml writes them (faster); a different text would change every shard's revision, and so
    # roll every feed pod, on the operator's upgrade.
    docs = [feed(symbols=["BTC-USDT", "ETH-USD-PERP"], storage={"lake": "./lakes/é x: y #1 " + "l" * 120})]
    docs += [load_manifest(str(path))] if "kind: DataFeed" in path.read_text() else []
    for df in docs:
        doc = shard_manifest(df, list(df.spec.symbols))
        assert manifest_text(doc) == yaml.safe_dump(doc, sort_keys=False)
        assert yaml.safe_load(manifest_text(doc)) == doc


def test_revision_follows_what_the_pod_runs_and_nothing_else() -> None:
    base = render_shard(feed(), UID, 0, ["BTC-USDT"], CONFIG)
    assert render_shard(feed(), UID, 0, ["BTC-USDT"], CONFIG) == base, "deterministic"
    assert render_shard(feed(), UID, 0, ["ETH-USDT"], CONFIG).revision != base.revision
    assert render_shard(feed(book={"depth": 10}), UID, 0, ["BTC-USDT"], CONFIG).revision != base.revision
    other_image = OperatorConfig(feed_image="registry.example/svoe/feedpod:1.2.4")
    assert render_shard(feed(), UID, 0, ["BTC-USDT"], other_image).revision != base.revision
    labelled = parse_manifest(
        {
            **feed().model_dump(by_alias=True, exclude_none=True),
            "metadata": {"name": "demo", "namespace": "md", "labels": {"team": "x"}},
        }
    )
    assert render_shard(labelled, UID, 0, ["BTC-USDT"], CONFIG).revision == base.revision
    assert base.pod_name == f"demo-0-r0-{base.revision}"
    assert base.configmap_name == f"demo-0-{base.revision}"


def test_names_fit_kubernetes_limits() -> None:
    assert service_name("binance", 2) == "binance-2"
    assert service_name("1inch", 0) == "df-1inch-0", "service names must start with a letter"
    long = "a" * 52
    shard = render_shard(
        parse_manifest({**feed().model_dump(by_alias=True, exclude_none=True), "metadata": {"name": long}}),
        UID,
        999,
        ["BTC-USDT"],
        CONFIG,
    )
    assert len(shard.service_name) <= 63
    assert len(shard.pod_name) <= 253


def test_local_lake_gets_a_writable_volume_and_s3_does_not() -> None:
    local = render_shard(feed(storage={"lake": "/srv/lake"}), UID, 0, ["BTC-USDT"], CONFIG).pod
    mounts = {m["mountPath"] for m in containers(local)["aggregator"]["volumeMounts"]}
    assert "/srv/lake" in mounts
    s3 = render_shard(feed(storage={"lake": "s3://b/p", "glueDatabase": "svoe"}), UID, 0, ["BTC-USDT"], CONFIG).pod
    assert "lake" not in {v["name"] for v in s3["spec"]["volumes"]}


def test_feed_service_account_for_the_lake_role() -> None:
    pod = render_shard(feed(), UID, 0, ["BTC-USDT"], OperatorConfig(feed_service_account="svoe-feed")).pod
    assert pod["spec"]["serviceAccountName"] == "svoe-feed"
    assert "serviceAccountName" not in render_shard(feed(), UID, 0, ["BTC-USDT"], CONFIG).pod["spec"]


def test_peering_priorities_are_stable_per_pod_and_distinct_between_pods() -> None:
    from svoe.operator.main import peering_priority

    assert peering_priority({"SVOE_PEERING_PRIORITY": "7", "POD_NAME": "a"}) == 7
    a = peering_priority({"POD_NAME": "svoe-operator-7d9f-abcde"})
    assert a == peering_priority({"POD_NAME": "svoe-operator-7d9f-abcde"})
    assert a != peering_priority({"POD_NAME": "svoe-operator-7d9f-fghij"})


def test_node_group_scheduling_can_be_turned_off() -> None:
    pod = render_shard(feed(), UID, 0, ["BTC-USDT"], OperatorConfig(feed_node_role="")).pod
    assert "nodeSelector" not in pod["spec"] and "tolerations" not in pod["spec"]


def test_config_from_env_and_its_errors() -> None:
    from svoe.operator.config import ConfigError

    cfg = OperatorConfig.from_env(
        {"SVOE_FEED_IMAGE": "x/y:1", "SVOE_RESYNC_SECONDS": "2.5", "SVOE_FEED_SERVICE_ACCOUNT": "feed"}
    )
    assert cfg.feed_image == "x/y:1" and cfg.resync_seconds == 2.5 and cfg.redis_image == "redis:7.4-alpine"
    assert cfg.feed_service_account == "feed"
    assert OperatorConfig.from_env({}).feed_image == "ghcr.io/svoe/feedpod:0.1.0"
    with pytest.raises(ConfigError, match="SVOE_RESYNC_SECONDS"):
        OperatorConfig.from_env({"SVOE_RESYNC_SECONDS": "soon"})
    with pytest.raises(ConfigError, match="SVOE_IMAGE_PULL_POLICY"):
        OperatorConfig.from_env({"SVOE_IMAGE_PULL_POLICY": "Sometimes"})


def test_the_live_stream_is_reachable_through_the_shard_service_by_default() -> None:
    def live_ports(f: DataFeed) -> list[dict[str, Any]]:
        return [p for p in render_shard(f, UID, 0, ["BTC-USDT"], OperatorConfig()).service["spec"]["ports"]
                if p["name"] == "live"]  # fmt: skip

    default = feed()
    assert default.spec.live.bind_address(in_pod=True) == "0.0.0.0"
    assert default.spec.live.bind_address(in_pod=False) == "127.0.0.1"  # svoe run stays on the laptop
    assert live_ports(default) == [{"name": "live", "port": 5555, "targetPort": "live", "protocol": "TCP"}]
    assert live_ports(feed(live={"port": 6000})) == [{"name": "live", "port": 6000, "targetPort": "live",
                                                      "protocol": "TCP"}]  # fmt: skip
    assert live_ports(feed(live={"bind": "127.0.0.1"})) == []  # kept inside the pod, as asked
    assert live_ports(feed(live={"enabled": False})) == []
    # The pod's manifest leaves the bind unset, so the aggregator picks the pod default itself.
    cm = render_shard(default, UID, 0, ["BTC-USDT"], OperatorConfig()).configmap
    assert "bind" not in yaml.safe_load(cm["data"]["datafeed.yaml"])["spec"].get("live", {})


def test_feed_pods_get_the_operators_ca_bundle_and_extra_environment() -> None:
    from svoe.api.contract import FEED_CA_FILE
    from svoe.operator.config import ConfigError

    extra = '{"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_CA_BUNDLE": "/etc/svoe/ca/bundle.pem"}'
    config = OperatorConfig.from_env({"SVOE_FEED_CA_CONFIGMAP": "corp-ca", "SVOE_FEED_EXTRA_ENV": extra})
    pod = render_shard(feed(endpoints={"caFile": FEED_CA_FILE}), UID, 0, ["BTC-USDT"], config).pod
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "ca"]
    assert volume["configMap"] == {"name": "corp-ca", "items": [{"key": "ca.crt", "path": "bundle.pem"}]}
    for name in ("collector", "aggregator"):
        c = containers(pod)[name]
        mount = next(m for m in c["volumeMounts"] if m["name"] == "ca")
        assert FEED_CA_FILE.startswith(mount["mountPath"] + "/") and mount["readOnly"] is True
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000" and env["AWS_CA_BUNDLE"] == FEED_CA_FILE
    plain = render_shard(feed(), UID, 0, ["BTC-USDT"], OperatorConfig()).pod
    assert not [v for v in plain["spec"]["volumes"] if v["name"] == "ca"]
    for bad, says in (("SVOE_FEED_EXTRA_ENV", "not JSON"), ("SVOE_FEED_CA_CONFIGMAP", "NAME:KEY")):
        with pytest.raises(ConfigError, match=says):
            OperatorConfig.from_env({bad: "{nope"})
    for reserved in ("POD_NAME", "SVOE_WRITER"):  # one writer for every pod would merge their copies
        with pytest.raises(ConfigError, match="set by the operator"):
            OperatorConfig.from_env({"SVOE_FEED_EXTRA_ENV": json.dumps({reserved: "x"})})
