"""Operator settings: images, scheduling, timings. Read from the environment of the operator pod."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_FEED_IMAGE = "ghcr.io/svoe/feedpod:0.1.0"
DEFAULT_REDIS_IMAGE = "redis:7.4-alpine"
MANAGER = "svoe-operator"


class ConfigError(ValueError):
    """An operator setting that cannot be used; the message names the variable and the fix."""


@dataclass(frozen=True)
class ContainerResources:
    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str

    def as_k8s(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


def _default_resources() -> dict[str, ContainerResources]:
    return {
        "collector": ContainerResources("250m", "256Mi", "1", "1Gi"),
        "aggregator": ContainerResources("250m", "512Mi", "1", "2Gi"),
        "redis": ContainerResources("100m", "256Mi", "500m", "1Gi"),
        # A FeatureSet's featurizer: one process, a few windows per symbol in memory.
        "featurizer": ContainerResources("100m", "256Mi", "1", "1Gi"),
    }


@dataclass(frozen=True)
class OperatorConfig:
    feed_image: str = DEFAULT_FEED_IMAGE
    redis_image: str = DEFAULT_REDIS_IMAGE
    image_pull_policy: str = "IfNotPresent"
    # The spot node group for feed pods (kops instance group labels/taints use the same names).
    # Empty disables the nodeSelector and the toleration, e.g. for kind or a single-node cluster.
    feed_node_role: str = "feed"
    # The service account of feed pods: the one bound to the lake's IAM role (IRSA / pod
    # identity) for S3 and Glue. Empty: the namespace's default account.
    feed_service_account: str = ""
    metrics_port: int = 8090
    # Safety net besides the watch streams: every DataFeed is re-checked at least this often.
    resync_seconds: float = 5.0
    # Redis stops accepting writes at this share of its container's memory limit (noeviction):
    # the buffer must never drop entries, so it fails loudly before the OOM killer strikes.
    redis_maxmemory_ratio: float = 0.8
    resources: Mapping[str, ContainerResources] = field(default_factory=_default_resources)
    # A ConfigMap (in each feed namespace) with a PEM CA bundle, mounted in the feed containers at
    # contract.FEED_CA_FILE for `spec.endpoints.caFile`. (name, key); None mounts nothing. Not set as
    # AWS_CA_BUNDLE: botocore would then trust only it, and AWS's own endpoints would fail.
    feed_ca_configmap: tuple[str, str] | None = None
    # Extra environment of the collector and aggregator, e.g. AWS_ENDPOINT_URL of a non-AWS store.
    feed_extra_env: Mapping[str, str] = field(default_factory=dict)
    # How often each Ready feed pod's /stats is read (through the API server's pod proxy) for
    # the health figures of the status; 0 turns the reads off.
    health_interval_seconds: float = 15.0
    # A shard whose newest event is older than this is Stale.
    stale_after_seconds: float = 120.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        e = os.environ if env is None else env

        def number(name: str, default: float, minimum: float) -> float:
            raw = e.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a number; set it to e.g. {default:g}") from None
            if value < minimum:
                raise ConfigError(f"{name}={raw!r} is below {minimum:g}; set it to e.g. {default:g}")
            return value

        policy = e.get("SVOE_IMAGE_PULL_POLICY", "IfNotPresent")
        if policy not in ("Always", "IfNotPresent", "Never"):
            raise ConfigError(f"SVOE_IMAGE_PULL_POLICY={policy!r}: use Always, IfNotPresent or Never")
        return cls(
            feed_ca_configmap=_ca_configmap(e.get("SVOE_FEED_CA_CONFIGMAP", "")),
            feed_extra_env=_extra_env(e.get("SVOE_FEED_EXTRA_ENV", "")),
            feed_image=e.get("SVOE_FEED_IMAGE") or DEFAULT_FEED_IMAGE,
            redis_image=e.get("SVOE_REDIS_IMAGE") or DEFAULT_REDIS_IMAGE,
            image_pull_policy=policy,
            feed_node_role=e.get("SVOE_FEED_NODE_ROLE", "feed"),
            feed_service_account=e.get("SVOE_FEED_SERVICE_ACCOUNT", ""),
            metrics_port=int(number("SVOE_OPERATOR_METRICS_PORT", 8090, 0)),
            resync_seconds=number("SVOE_RESYNC_SECONDS", 5.0, 0.1),
            resources=_featurizer_resources(e.get("SVOE_FEATURIZER_RESOURCES", "")),
            health_interval_seconds=number("SVOE_HEALTH_INTERVAL_SECONDS", 15.0, 0),
            stale_after_seconds=number("SVOE_STALE_AFTER_SECONDS", 120.0, 1),
        )


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Set by the operator itself: an override would break the pod's contracts (docs/contracts.md).
# SVOE_WRITER would give every pod one writer identity, and the view would then merge their copies.
_RESERVED_ENV = {
    "POD_NAME",
    "POD_UID",
    "SVOE_SHARD",
    "SVOE_DATAFEED",
    "SVOE_WRITER",
    "PROMETHEUS_MULTIPROC_DIR",
    "XDG_CACHE_HOME",
}


def _ca_configmap(raw: str) -> tuple[str, str] | None:
    if not raw:
        return None
    name, _, key = raw.partition(":")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) or (key and not re.fullmatch(r"[-._a-zA-Z0-9]+", key)):
        raise ConfigError(f"SVOE_FEED_CA_CONFIGMAP={raw!r}: use NAME or NAME:KEY of a ConfigMap, e.g. corp-ca:ca.crt")
    return name, key or "ca.crt"


def _extra_env(raw: str) -> dict[str, str]:
    if not raw:
        return {}
    try:
        env = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConfigError(f"SVOE_FEED_EXTRA_ENV is not JSON ({err.msg}): use an object, e.g. "
                          '{"AWS_ENDPOINT_URL": "http://minio.storage:9000"}') from None  # fmt: skip
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ConfigError('SVOE_FEED_EXTRA_ENV must be a JSON object of strings, e.g. {"AWS_REGION": "eu-west-1"}')
    for name in env:
        if not _ENV_NAME.match(name):
            raise ConfigError(f"SVOE_FEED_EXTRA_ENV: {name!r} is not an environment variable name")
        if name in _RESERVED_ENV:
            raise ConfigError(f"SVOE_FEED_EXTRA_ENV: {name} is set by the operator itself; leave it out")
    return dict(env)


def _featurizer_resources(raw: str) -> dict[str, ContainerResources]:
    """The default resources, the featurizer's from SVOE_FEATURIZER_RESOURCES (a container's
    `resources` as JSON: {"requests": {"cpu", "memory"}, "limits": {"cpu", "memory"}}) when set."""
    out = _default_resources()
    if not raw:
        return out
    base = out["featurizer"]
    try:
        doc = json.loads(raw)
        req, lim = doc.get("requests") or {}, doc.get("limits") or {}
        out["featurizer"] = ContainerResources(
            str(req.get("cpu", base.cpu_request)),
            str(req.get("memory", base.memory_request)),
            str(lim.get("cpu", base.cpu_limit)),
            str(lim.get("memory", base.memory_limit)),
        )
    except (json.JSONDecodeError, AttributeError):
        raise ConfigError(
            "SVOE_FEATURIZER_RESOURCES must be a JSON object like "
            '{"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}'
        ) from None
    return out
