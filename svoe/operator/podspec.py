"""Pieces of the pod specs the operator renders (feed pods and featurizers): one security
posture, one probe shape, one placement on the feed nodes. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from svoe.operator.config import OperatorConfig

FEED_UID = 10001
NODE_ROLE_LABEL = "svoe.io/node-role"
FEED_TAINT_KEY = "svoe.io/feed"


def container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": FEED_UID,
        "runAsGroup": FEED_UID,
        "fsGroup": FEED_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def place_on_feed_nodes(pod_spec: dict[str, Any], node_selector: Mapping[str, str], config: OperatorConfig) -> None:
    """The operator's feed node role (selector and toleration) plus any selector of the resource."""
    selector = dict(node_selector)
    if config.feed_node_role:
        selector[NODE_ROLE_LABEL] = config.feed_node_role
        pod_spec["tolerations"] = [
            {"key": FEED_TAINT_KEY, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
        ]
    if selector:
        pod_spec["nodeSelector"] = selector


def http_probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }
