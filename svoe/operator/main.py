"""`svoe operator`: run the kopf operator against the current kubeconfig (or in-cluster account)."""

from __future__ import annotations

import logging
import os
import random
import zlib
from collections.abc import Mapping

import kopf

from svoe.operator.config import OperatorConfig
from svoe.operator.controller import Controller
from svoe.operator.handlers import build_registry

LOG = logging.getLogger(__name__)


def run_operator(
    namespace: str | None = None,
    all_namespaces: bool = False,
    peering: str | None = None,
    *,
    config: OperatorConfig | None = None,
    priority: int | None = None,
    peering_lifetime: int | None = None,
    liveness: str | None = None,
) -> None:
    """Run until SIGTERM/SIGINT.

    namespace: watch only this namespace; all_namespaces (or neither given): the whole cluster.
    peering: the kopf peering object shared by replicas (KopfPeering in the namespace, or
    ClusterKopfPeering cluster-wide; the chart creates it). Only the replica of the highest
    priority works, the others stand by and take over when its heartbeat expires. Replicas
    take `priority`, else SVOE_PEERING_PRIORITY, else one derived from POD_NAME (stable across
    restarts of a pod, distinct between pods), else a random one, so that no two tie (kopf
    pauses every operator that sees a peer of the same priority). Without peering, the operator
    runs standalone and ignores any peering objects.
    liveness: kopf's liveness endpoint, e.g. http://0.0.0.0:8080/healthz (a probe target that
    fails when the operator's event loop is stuck).
    """
    if namespace and all_namespaces:
        raise ValueError("pass either a namespace or all_namespaces, not both")
    config = config or OperatorConfig.from_env()
    if peering is not None and priority is None:
        priority = peering_priority(os.environ)
    lifetime = peering_lifetime
    if lifetime is None and os.environ.get("SVOE_PEERING_LIFETIME"):
        lifetime = int(os.environ["SVOE_PEERING_LIFETIME"])
    controller = Controller(config)
    registry = build_registry(controller, peering_lifetime=lifetime)
    LOG.info(
        "svoe operator: %s, peering %s, feed image %s",
        f"namespace {namespace}" if namespace else "all namespaces",
        f"{peering!r} priority {priority}" if peering else "off (standalone)",
        config.feed_image,
    )
    kopf.run(
        registry=registry,
        clusterwide=not namespace,
        namespaces=[namespace] if namespace else [],
        peering_name=peering,
        standalone=peering is None,
        priority=priority,
        liveness_endpoint=liveness,
    )


def peering_priority(env: Mapping[str, str]) -> int:
    raw = env.get("SVOE_PEERING_PRIORITY")
    if raw:
        return int(raw)
    pod = env.get("POD_NAME")
    if pod:
        return zlib.crc32(pod.encode()) % 1_000_000 + 1
    return random.randint(1, 1_000_000)
