"""Pure functions: a FeatureSet and its source DataFeed -> the ConfigMap, Deployment and Service
of its featurizer (`svoe features live`, docs/contracts.md "FeatureSet in a cluster").

The featurizer is stateless (its windows refill from the live streams within a window), so a
Deployment of one replica runs it and a spec or source change simply rolls it. Nothing in this
module talks to a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from svoe.api import contract
from svoe.api.datafeed import API_GROUP, API_VERSION, DataFeed
from svoe.api.featureset import KIND, FeatureSet
from svoe.operator import render
from svoe.operator.config import MANAGER, OperatorConfig
from svoe.operator.podspec import container_security, http_probe, place_on_feed_nodes, pod_security
from svoe.operator.sharding import Assignment

L_FEATURESET = "svoe.io/featureset"
COMPONENT = "featurizer"
CONTAINER = "featurizer"
COMMAND = ["svoe", "features", "live"]


@dataclass(frozen=True)
class FeaturizerObjects:
    configmap: dict[str, Any]
    deployment: dict[str, Any]
    service: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.deployment["metadata"]["name"])


def featurizer_name(featureset: str) -> str:
    """Deployment, ConfigMap and Service share it; Service names must start with a letter."""
    base = f"{featureset}-featurizer"
    return base if base[0].isalpha() else f"fs-{base}"


def endpoints(feed: DataFeed, assignment: Assignment) -> list[str]:
    """One ZMQ endpoint per shard of the source DataFeed: its Service and live port."""
    # The namespace's Service domain: the name resolves whatever the pod's DNS search path.
    domain = f".{feed.metadata.namespace}.svc" if feed.metadata.namespace else ""
    hosts = [render.service_name(feed.metadata.name, i) + domain for i in sorted(assignment)]
    return [f"tcp://{h}:{feed.spec.live.port}" for h in hosts]


def labels(featureset: str) -> dict[str, str]:
    return {
        render.L_NAME: "svoe",
        render.L_INSTANCE: featureset,
        render.L_COMPONENT: COMPONENT,
        render.L_MANAGED_BY: MANAGER,
        L_FEATURESET: featureset,
    }


def selector(featureset: str) -> dict[str, str]:
    return {render.L_NAME: "svoe", render.L_COMPONENT: COMPONENT, L_FEATURESET: featureset}


def owner_reference(featureset: str, uid: str) -> dict[str, Any]:
    return {**render.owner_reference(featureset, uid), "kind": KIND}


def manifest(fs: FeatureSet) -> dict[str, Any]:
    """The FeatureSet as the featurizer reads it: name, namespace and the spec (labels and
    annotations change nothing it does, and must not roll it)."""
    meta: dict[str, Any] = {"name": fs.metadata.name}
    if fs.metadata.namespace:
        meta["namespace"] = fs.metadata.namespace
    spec = fs.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": meta, "spec": spec}


def args(connect: list[str]) -> list[str]:
    out = [contract.FEATURESET_PATH]
    for endpoint in connect:
        out += ["--connect", endpoint]
    return [*out, "--health-port", str(contract.FEATURIZER_PORT)]


def _container(fs: FeatureSet, connect: list[str], config: OperatorConfig) -> dict[str, Any]:
    ports = [{"name": "metrics", "containerPort": contract.FEATURIZER_PORT}]
    if fs.spec.live.enabled:
        ports.append({"name": "live", "containerPort": fs.spec.live.port})
    return {
        "name": CONTAINER,
        "image": config.feed_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": COMMAND,
        "args": args(connect),
        "env": [
            # Set: the featurizer binds its PUB socket on 0.0.0.0 (contract), for other pods.
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "XDG_CACHE_HOME", "value": contract.CACHE_DIR},
        ],
        "ports": ports,
        "startupProbe": http_probe(contract.HEALTHZ_PATH, contract.FEATURIZER_PORT, period=2, failures=60),
        "readinessProbe": http_probe(contract.READYZ_PATH, contract.FEATURIZER_PORT, period=5, failures=3),
        "livenessProbe": http_probe(contract.HEALTHZ_PATH, contract.FEATURIZER_PORT, period=10, failures=3),
        "resources": config.resources["featurizer"].as_k8s(),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": contract.CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": contract.TMP_DIR},
        ],
    }


def render_featurizer(fs: FeatureSet, uid: str, connect: list[str], config: OperatorConfig) -> FeaturizerObjects:
    """The three objects of a FeatureSet's featurizer. Deterministic: same input, same objects."""
    fs_name, namespace = fs.metadata.name, fs.metadata.namespace
    name = featurizer_name(fs_name)
    file = contract.FEATURESET_FILE
    data = {file: render.manifest_text(manifest(fs))}

    def meta(extra: dict[str, str]) -> dict[str, Any]:
        m: dict[str, Any] = {
            "name": name,
            "labels": labels(fs_name),
            "annotations": extra,
            "ownerReferences": [owner_reference(fs_name, uid)],
        }
        if namespace:
            m["namespace"] = namespace
        return m

    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta({render.A_HASH: render.content_hash(data)})}
    configmap["data"] = data
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": pod_security(),
        "containers": [_container(fs, connect, config)],
        "volumes": [
            {"name": "config", "configMap": {"name": name, "items": [{"key": file, "path": file}]}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        ],
    }
    place_on_feed_nodes(pod_spec, {}, config)
    # The ConfigMap is mounted under a fixed name: its content hash in the template rolls the pod.
    template_hash = render.content_hash({"data": data, "pod": pod_spec})
    deployment_spec = {
        "replicas": 1,
        "revisionHistoryLimit": 3,
        "selector": {"matchLabels": selector(fs_name)},
        # The new featurizer starts before the old one stops: subscribers reconnect to the Service.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {
            "metadata": {
                "labels": labels(fs_name),
                "annotations": {render.A_HASH: template_hash, "kubectl.kubernetes.io/default-container": CONTAINER},
            },
            "spec": pod_spec,
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta({render.A_HASH: template_hash}),
        "spec": deployment_spec,
    }
    ports = [{"name": "metrics", "port": contract.FEATURIZER_PORT, "targetPort": "metrics", "protocol": "TCP"}]
    if fs.spec.live.served_to_other_pods():
        ports.append({"name": "live", "port": fs.spec.live.port, "targetPort": "live", "protocol": "TCP"})
    service_spec = {"clusterIP": "None", "selector": selector(fs_name), "ports": ports}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta({render.A_HASH: render.content_hash(service_spec)}),
        "spec": service_spec,
    }
    return FeaturizerObjects(configmap, deployment, service)
