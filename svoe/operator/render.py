"""Pure functions: a DataFeed shard -> the ConfigMap, Pod and Service that run it.

What a feed pod looks like is decided here and nowhere else; the ports, paths and file names its
containers share with the CLI are those of svoe/api/contract.py (docs/contracts.md describes
the commands, ports, paths and labels). Nothing in this module talks to a cluster.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from svoe.api import contract
from svoe.api.datafeed import API_GROUP, API_VERSION, KIND, DataFeed
from svoe.operator.config import MANAGER, OperatorConfig
from svoe.operator.podspec import container_security, http_probe, place_on_feed_nodes, pod_security

L_NAME = "app.kubernetes.io/name"
L_INSTANCE = "app.kubernetes.io/instance"
L_COMPONENT = "app.kubernetes.io/component"
L_MANAGED_BY = "app.kubernetes.io/managed-by"
L_DATAFEED = "svoe.io/datafeed"
L_SHARD = "svoe.io/shard"
L_REPLICA = "svoe.io/replica"
L_REVISION = "svoe.io/revision"
A_SYMBOLS = "svoe.io/symbols"
A_REVISION = "svoe.io/revision"
A_HASH = "svoe.io/content-hash"

MANAGED_SELECTOR = f"{L_MANAGED_BY}={MANAGER}"


@dataclass(frozen=True)
class ShardObjects:
    """Everything one shard needs: one ConfigMap and Service, and a pod per replica (the same
    spec, its own name and replica label). `revision` changes whenever the pods would run
    differently; the replica count is not part of it, so scaling leaves running pods alone."""

    index: int
    symbols: tuple[str, ...]
    revision: str
    configmap: dict[str, Any]
    pods: tuple[dict[str, Any], ...]
    service: dict[str, Any]

    @property
    def pod(self) -> dict[str, Any]:
        return self.pods[0]

    @property
    def pod_name(self) -> str:
        return str(self.pod["metadata"]["name"])

    def pod_names(self) -> list[str]:
        return [str(p["metadata"]["name"]) for p in self.pods]

    @property
    def configmap_name(self) -> str:
        return str(self.configmap["metadata"]["name"])

    @property
    def service_name(self) -> str:
        return str(self.service["metadata"]["name"])


def shard_name(datafeed: str, index: int) -> str:
    return f"{datafeed}-{index}"


def service_name(datafeed: str, index: int) -> str:
    # Service names are DNS-1035 labels (must start with a letter); DataFeed names may not.
    base = shard_name(datafeed, index)
    return base if base[0].isalpha() else f"df-{base}"


def configmap_name(datafeed: str, index: int, revision: str) -> str:
    return f"{shard_name(datafeed, index)}-{revision}"


def pod_name(datafeed: str, index: int, replica: int, revision: str) -> str:
    return f"{shard_name(datafeed, index)}-r{replica}-{revision}"


def labels(datafeed: str, index: int | None = None) -> dict[str, str]:
    out = {
        L_NAME: "svoe",
        L_INSTANCE: datafeed,
        L_COMPONENT: "feed",
        L_MANAGED_BY: MANAGER,
        L_DATAFEED: datafeed,
    }
    if index is not None:
        out[L_SHARD] = str(index)
    return out


def selector(datafeed: str, index: int) -> dict[str, str]:
    return {L_NAME: "svoe", L_COMPONENT: "feed", L_DATAFEED: datafeed, L_SHARD: str(index)}


def owner_reference(datafeed: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": datafeed,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def content_hash(obj: Any) -> str:
    """Short stable digest of JSON-able content."""
    raw = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:10]


def shard_manifest(feed: DataFeed, symbols: Sequence[str]) -> dict[str, Any]:
    """The DataFeed as the shard's processes read it: the whole spec, symbols narrowed.

    Only name and namespace are kept from the metadata: labels and annotations change without
    changing what the pod does, and must not restart it.
    """
    # How many pods run the shard, and where, is the operator's business, not the pod's.
    spec = feed.spec.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"replicas", "placement"})
    spec["symbols"] = list(symbols)
    meta: dict[str, Any] = {"name": feed.metadata.name}
    if feed.metadata.namespace:
        meta["namespace"] = feed.metadata.namespace
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": meta, "spec": spec}


def _memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


def redis_conf(config: OperatorConfig) -> str:
    limit = _memory_bytes(config.resources["redis"].memory_limit)
    maxmemory = int(limit * config.redis_maxmemory_ratio)
    return "\n".join(
        [
            "# Written by the svoe operator (docs/contracts.md): the pod's durable stream buffer.",
            "port 0",
            f"unixsocket {contract.REDIS_SOCKET}",
            "unixsocketperm 700",
            f"dir {contract.DATA_DIR}",
            "appendonly yes",
            "appendfsync always",
            'save ""',
            f"maxmemory {maxmemory}",
            # Entries are never dropped: a full buffer refuses writes and the collector reports it.
            "maxmemory-policy noeviction",
            'logfile ""',
            "",
        ]
    )


def termination_grace_seconds(feed: DataFeed) -> int:
    # Must exceed flushIntervalSeconds + 30 (contracts): a final flush of every stream, plus
    # the upload of the last blocks.
    return math.ceil(feed.spec.storage.flush_interval_seconds) + 60


def _local_lake_dir(lake: str) -> str | None:
    """The absolute directory a local lake resolves to inside the pod, or None for s3."""
    if lake.startswith("s3://"):
        return None
    path = lake.removeprefix("file://")
    return posixpath.normpath(path if path.startswith("/") else posixpath.join(contract.WORK_DIR, path))


def _feed_args(name: str, port: int) -> list[str]:
    """The command line of `svoe collector|aggregator` in a pod. Every port and path is passed,
    none left to the CLI's defaults: the pod spec alone says what each container serves."""
    args = ["--manifest", contract.MANIFEST_PATH, "--redis", contract.REDIS_URL]
    args += ["--health-host", contract.HEALTH_HOST, "--health-port", str(port)]
    if name == "collector":
        args += ["--log-file", contract.COLLECTOR_LOG_FILE]
    return args


def _feed_container(
    name: str, feed: DataFeed, index: int, port: int, config: OperatorConfig, mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name,
        "image": config.feed_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["svoe", name],
        "args": _feed_args(name, port),
        "workingDir": contract.WORK_DIR,
        "env": [
            {"name": "PROMETHEUS_MULTIPROC_DIR", "value": contract.METRICS_DIR},
            {"name": "XDG_CACHE_HOME", "value": contract.CACHE_DIR},
            {"name": "SVOE_SHARD", "value": str(index)},
            {"name": "SVOE_DATAFEED", "value": feed.metadata.name},
            # The lake's writer identity (svoe/lake/layout.py): unique per pod, like its Redis.
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            # A pod recreated under its name (a failed replica replaced) starts an empty Redis.
            {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            *({"name": k, "value": v} for k, v in sorted(config.feed_extra_env.items())),
        ],
        "ports": [{"name": "metrics" if port == contract.COLLECTOR_PORT else "health", "containerPort": port}],
        "startupProbe": http_probe(contract.HEALTHZ_PATH, port, period=2, failures=90),
        "readinessProbe": http_probe(contract.READYZ_PATH, port, period=5, failures=3),
        "livenessProbe": http_probe(contract.HEALTHZ_PATH, port, period=10, failures=3),
        "resources": config.resources[name].as_k8s(),
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }
    return c


def _pod_spec(feed: DataFeed, index: int, configmap: str, config: OperatorConfig) -> dict[str, Any]:
    spec = feed.spec
    base_mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": contract.CONFIG_DIR, "readOnly": True},
        {"name": "run", "mountPath": contract.RUN_DIR},
        {"name": "metrics", "mountPath": contract.METRICS_DIR},
        {"name": "tmp", "mountPath": contract.TMP_DIR},
        {"name": "work", "mountPath": contract.WORK_DIR},
    ]
    volumes: list[dict[str, Any]] = [
        {
            "name": "config",
            "configMap": {
                "name": configmap,
                "items": [
                    {"key": contract.MANIFEST_FILE, "path": contract.MANIFEST_FILE},
                    {"key": contract.REDIS_CONF_FILE, "path": contract.REDIS_CONF_FILE},
                ],
            },
        },
        {"name": "run", "emptyDir": {"sizeLimit": "64Mi"}},
        {"name": "metrics", "emptyDir": {"sizeLimit": "256Mi"}},
        {"name": "data", "emptyDir": {"sizeLimit": "8Gi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "work", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    if config.feed_ca_configmap is not None:
        ca_name, ca_key = config.feed_ca_configmap
        volumes.append(
            {"name": "ca", "configMap": {"name": ca_name, "items": [{"key": ca_key, "path": contract.CA_FILE}]}}
        )
        base_mounts.append({"name": "ca", "mountPath": contract.CA_DIR, "readOnly": True})
    aggregator_mounts = list(base_mounts)
    lake_dir = _local_lake_dir(spec.storage.lake)
    if lake_dir is not None and not (lake_dir + "/").startswith(contract.WORK_DIR + "/"):
        # A local lake outside the working directory needs its own writable volume (the root
        # filesystem is read-only). Production lakes are s3://; this serves kind/demo clusters.
        volumes.append({"name": "lake", "emptyDir": {}})
        aggregator_mounts.append({"name": "lake", "mountPath": lake_dir})

    collector = _feed_container("collector", feed, index, contract.COLLECTOR_PORT, config, base_mounts)
    aggregator = _feed_container("aggregator", feed, index, contract.AGGREGATOR_PORT, config, aggregator_mounts)
    if spec.live.enabled:
        aggregator["ports"].append({"name": "live", "containerPort": spec.live.port})
    redis_ping = {"exec": {"command": ["redis-cli", "-s", contract.REDIS_SOCKET, "ping"]}}
    aggregator_health = f"http://127.0.0.1:{contract.AGGREGATOR_PORT}{contract.HEALTHZ_PATH}"
    redis = {
        "name": "redis",
        "image": config.redis_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["redis-server", contract.REDIS_CONF_PATH],
        "readinessProbe": {**redis_ping, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3},
        "livenessProbe": {**redis_ping, "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 6},
        # Containers stop in parallel on pod deletion; the aggregator drains the streams on
        # SIGTERM (contracts), so Redis must outlive it: wait until the aggregator's health port
        # stops answering, bounded by terminationGracePeriodSeconds.
        "lifecycle": {
            "preStop": {
                "exec": {
                    "command": [
                        "sh",
                        "-c",
                        f"while wget -q -T 2 -O /dev/null {aggregator_health}; do sleep 1; done",
                    ]
                }
            }
        },
        "resources": config.resources["redis"].as_k8s(),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": contract.CONFIG_DIR, "readOnly": True},
            {"name": "run", "mountPath": contract.RUN_DIR},
            {"name": "data", "mountPath": contract.DATA_DIR},
        ],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": termination_grace_seconds(feed),
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": pod_security(),
        "containers": [redis, collector, aggregator],
        "volumes": volumes,
    }
    if config.feed_service_account:
        # AWS credentials come from the account's projected web-identity token, which the
        # pod-identity webhook mounts itself; the API token stays unmounted.
        pod_spec["serviceAccountName"] = config.feed_service_account
    place_on_feed_nodes(pod_spec, spec.placement.node_selector, config)
    # Replicas of a shard on different nodes (required: skew 1) and, where the cluster has zones,
    # in different zones (preferred). Only nodes the pod may run on count as domains (taints and
    # node affinity honoured): a tainted or cordoned node holding no copy would otherwise block
    # the extra pod of every make-before-break rollout. One usable node is one domain, where any
    # placement has skew 0, so small clusters still schedule every pod.
    shard_pods = {"matchLabels": selector(feed.metadata.name, index)}
    honour = {"nodeAffinityPolicy": "Honor", "nodeTaintsPolicy": "Honor"}
    pod_spec["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": shard_pods,
            **honour,
        },
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": shard_pods,
            **honour,
        },
    ]
    return pod_spec


# libyaml's emitter, where PyYAML has it: the same text as the pure-Python one for these manifests
# (tests/operator/test_render.py), 5x faster, and it was 8% of the operator's CPU with 500 feeds.
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def manifest_text(doc: Any) -> str:
    """A manifest the operator ships in a ConfigMap, as YAML, keys in the order given."""
    return str(yaml.dump(doc, Dumper=_DUMPER, sort_keys=False))


def render_shard(feed: DataFeed, uid: str, index: int, symbols: Sequence[str], config: OperatorConfig) -> ShardObjects:
    """The three objects of one shard. Deterministic: same input, same objects, same revision."""
    name = feed.metadata.name
    namespace = feed.metadata.namespace
    data = {
        contract.MANIFEST_FILE: manifest_text(shard_manifest(feed, symbols)),
        contract.REDIS_CONF_FILE: redis_conf(config),
    }
    # The revision covers everything the pod runs with; the configmap name inside the pod spec
    # derives from it, so it is hashed with a placeholder.
    revision = content_hash({"data": data, "pod": _pod_spec(feed, index, "", config)})
    cm_name = configmap_name(name, index, revision)
    owner = [owner_reference(name, uid)]
    shard_labels = labels(name, index)
    annotations = {A_SYMBOLS: ",".join(symbols), A_REVISION: revision}

    def meta(obj_name: str, extra_labels: dict[str, str], extra_annotations: dict[str, str]) -> dict[str, Any]:
        m: dict[str, Any] = {
            "name": obj_name,
            "labels": {**shard_labels, **extra_labels},
            "annotations": {**annotations, **extra_annotations},
            "ownerReferences": owner,
        }
        if namespace:
            m["namespace"] = namespace
        return m

    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(cm_name, {L_REVISION: revision}, {A_HASH: content_hash(data)}),
        "data": data,
    }
    pod_spec = _pod_spec(feed, index, cm_name, config)
    pods = tuple(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta(
                pod_name(name, index, r, revision),
                {L_REVISION: revision, L_REPLICA: str(r)},
                {"kubectl.kubernetes.io/default-container": "collector"},
            ),
            "spec": pod_spec,
        }
        for r in range(feed.spec.replicas)
    )
    ports = [{"name": "metrics", "port": contract.COLLECTOR_PORT, "targetPort": "metrics", "protocol": "TCP"}]
    live = feed.spec.live
    if live.served_to_other_pods():
        ports.append({"name": "live", "port": live.port, "targetPort": "live", "protocol": "TCP"})
    service_spec = {"clusterIP": "None", "selector": selector(name, index), "ports": ports}
    service_meta = meta(service_name(name, index), {}, {A_HASH: content_hash(service_spec)})
    # The service outlives pod revisions: it must not carry the revision and symbols.
    service_meta["annotations"] = {A_HASH: service_meta["annotations"][A_HASH]}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": service_meta, "spec": service_spec}
    return ShardObjects(index, tuple(symbols), revision, configmap, pods, service)
