"""Observing the children: a watched Pod, ConfigMap, Service or Deployment -> the few facts planning needs.

Pure: `observe` runs in kopf's index handlers on every watch event, and the planner reads only
`Observed` records, so a reconcile pass costs no API reads. `meta_drift` and `restore_patch` say
how a child edited by hand differs from what the operator rendered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from svoe.api.datafeed import KIND
from svoe.operator import render

JSON = dict[str, Any]
FAILING_REASONS = frozenset(
    {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName"}
)


@dataclass(frozen=True)
class Observed:
    """What the operator needs to know about one child, as seen in the watch cache."""

    kind: str
    name: str
    namespace: str
    uid: str
    resource_version: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    owner_uids: tuple[str, ...]
    owner_datafeeds: tuple[str, ...]  # names of the DataFeeds among the owners
    created: str
    deleting: bool
    deletion_timestamp: str | None  # when the kubelet must have stopped it (the grace period's end)
    content: str  # digest of the content the operator owns (see `content_digest`)
    keys: tuple[str, ...] = ()  # configmap data keys / service selector keys
    ready: bool = False
    failure: str | None = None  # why a pod is failing, if it is
    terminated: bool = False  # a pod in phase Failed or Succeeded: it never runs again
    unschedulable: str | None = None  # the scheduler's message for a pod no node can take
    available_replicas: int = 0  # a Deployment's

    @property
    def datafeed(self) -> str | None:
        return self.labels.get(render.L_DATAFEED)

    @property
    def shard(self) -> int | None:
        raw = self.labels.get(render.L_SHARD)
        return int(raw) if raw is not None and raw.isdigit() else None

    @property
    def replica(self) -> int:
        # Pods from before replicas carry no replica label: they were the only one, replica 0.
        raw = self.labels.get(render.L_REPLICA, "0")
        return int(raw) if raw.isdigit() else 0

    @property
    def revision(self) -> str | None:
        return self.annotations.get(render.A_REVISION)

    @property
    def symbols(self) -> tuple[str, ...] | None:
        raw = self.annotations.get(render.A_SYMBOLS)
        return None if raw is None else tuple(s for s in raw.split(",") if s)


def content_digest(kind: str, body: Mapping[str, Any]) -> str:
    """Digest of the fields the operator sets and the API server does not default."""
    if kind == "ConfigMap":
        return render.content_hash(dict(body.get("data") or {}))
    spec = body.get("spec") or {}
    if kind == "Deployment":
        template = spec.get("template") or {}
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        return render.content_hash(
            [spec.get("replicas"), annotations.get(render.A_HASH), content_digest("Pod", template)]
        )
    if kind == "Service":
        ports = [{k: p.get(k) for k in ("name", "port", "targetPort", "protocol")} for p in spec.get("ports") or []]
        return render.content_hash(
            {"clusterIP": spec.get("clusterIP"), "selector": dict(spec.get("selector") or {}), "ports": ports}
        )
    containers = [
        [c.get("name"), c.get("image"), c.get("command"), c.get("args")] for c in spec.get("containers") or []
    ]
    return render.content_hash(containers)


def pod_failure(body: Mapping[str, Any]) -> str | None:
    status = body.get("status") or {}
    if status.get("phase") in ("Failed", "Succeeded"):
        return str(status.get("reason") or f"Pod{status['phase']}")
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FAILING_REASONS:
            return f"{cs.get('name')}: {waiting['reason']}"
    return None


def pod_unschedulable(body: Mapping[str, Any]) -> str | None:
    """The scheduler's reason, while it finds no node for the pod (PodScheduled=False)."""
    for c in (body.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            return str(c.get("message") or "no node matches the pod's node selector and tolerations")
    return None


def pod_ready(body: Mapping[str, Any]) -> bool:
    status = body.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def observe(body: Mapping[str, Any]) -> Observed:
    kind = str(body.get("kind") or "")
    meta = body.get("metadata") or {}
    keys: tuple[str, ...] = ()
    if kind == "ConfigMap":
        keys = tuple(sorted((body.get("data") or {}).keys()))
    elif kind == "Service":
        keys = tuple(sorted(((body.get("spec") or {}).get("selector") or {}).keys()))
    return Observed(
        kind=kind,
        name=str(meta.get("name")),
        namespace=str(meta.get("namespace")),
        uid=str(meta.get("uid")),
        resource_version=str(meta.get("resourceVersion")),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        owner_uids=tuple(str(r.get("uid")) for r in meta.get("ownerReferences") or []),
        owner_datafeeds=tuple(str(r.get("name")) for r in meta.get("ownerReferences") or [] if r.get("kind") == KIND),
        created=str(meta.get("creationTimestamp") or ""),
        deleting=bool(meta.get("deletionTimestamp")),
        deletion_timestamp=meta.get("deletionTimestamp"),
        content=content_digest(kind, body),
        keys=keys,
        ready=kind == "Pod" and pod_ready(body),
        failure=pod_failure(body) if kind == "Pod" else None,
        terminated=kind == "Pod" and (body.get("status") or {}).get("phase") in ("Failed", "Succeeded"),
        unschedulable=pod_unschedulable(body) if kind == "Pod" else None,
        available_replicas=int((body.get("status") or {}).get("availableReplicas") or 0) if kind == "Deployment" else 0,
    )


def meta_drift(obs: Observed, desired: Mapping[str, Any]) -> JSON | None:
    meta = desired["metadata"]
    labels = {k: v for k, v in meta.get("labels", {}).items() if obs.labels.get(k) != v}
    annotations = {k: v for k, v in meta.get("annotations", {}).items() if obs.annotations.get(k) != v}
    if not labels and not annotations:
        return None
    patch: JSON = {}
    if labels:
        patch["labels"] = labels
    if annotations:
        patch["annotations"] = annotations
    return patch


def restore_patch(obs: Observed, desired: Mapping[str, Any]) -> JSON | None:
    """A merge patch that brings a configmap, service or deployment back to what the operator wrote."""
    patch: JSON = {}
    meta = meta_drift(obs, desired)
    if meta:
        patch["metadata"] = meta
    if obs.content != content_digest(obs.kind, desired):
        if obs.kind == "ConfigMap":
            data = dict(desired["data"])
            data.update({k: None for k in obs.keys if k not in data})
            patch["data"] = data
        elif obs.kind == "Deployment":
            # A merge patch replaces lists whole: the containers and their args are the desired ones.
            patch["spec"] = desired["spec"]
        else:
            spec = dict(desired["spec"])
            sel = dict(spec["selector"])
            sel.update({k: None for k in obs.keys if k not in sel})
            spec["selector"] = sel
            patch["spec"] = spec
    return patch or None
