"""Level-triggered reconciliation, pure: (DataFeed, observed children) -> actions + status.

The handlers feed this with the DataFeed body and the children kopf's indexes hold (an
informer cache built from the watch streams), run the actions through the API, and write the
status. Nothing here does I/O, so every rule is unit-tested without a server:

- the symbol-to-shard assignment comes from the status (or, if the status was never written,
  from the pods' annotations) and changes only where symbols were added or removed;
- each shard's pod name carries the revision of what it runs; a changed shard gets a new pod
  next to the old one, and the old one is deleted only when the new one is Ready
  (make-before-break, so a shard never stops collecting during an update);
- children edited or deleted by hand are patched back or recreated.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from svoe.api.crd import ShardPhase
from svoe.api.datafeed import DataFeed
from svoe.api.timestamps import now_rfc3339 as now_rfc3339  # re-exported: callers import it from here
from svoe.operator import render
from svoe.operator.config import OperatorConfig
from svoe.operator.sharding import Assignment, assign

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
    created: str
    deleting: bool
    content: str  # digest of the content the operator owns (see `content_digest`)
    keys: tuple[str, ...] = ()  # configmap data keys / service selector keys
    ready: bool = False
    failure: str | None = None  # why a pod is failing, if it is
    terminated: bool = False  # a pod in phase Failed or Succeeded: it never runs again

    @property
    def datafeed(self) -> str | None:
        return self.labels.get(render.L_DATAFEED)

    @property
    def shard(self) -> int | None:
        raw = self.labels.get(render.L_SHARD)
        return int(raw) if raw is not None and raw.isdigit() else None

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
        created=str(meta.get("creationTimestamp") or ""),
        deleting=bool(meta.get("deletionTimestamp")),
        content=content_digest(kind, body),
        keys=keys,
        ready=kind == "Pod" and pod_ready(body),
        failure=pod_failure(body) if kind == "Pod" else None,
        terminated=kind == "Pod" and (body.get("status") or {}).get("phase") in ("Failed", "Succeeded"),
    )


@dataclass(frozen=True)
class Action:
    verb: Literal["create", "patch", "delete"]
    kind: str
    name: str
    body: JSON | None = None  # the object to create, or the merge patch
    uid: str | None = None  # delete precondition: never delete a namesake
    reason: str = ""
    message: str = ""
    warning: bool = False


@dataclass(frozen=True)
class ShardState:
    index: int
    name: str
    symbols: tuple[str, ...]
    pod: str
    revision: str
    phase: ShardPhase
    serving: bool  # some pod of the shard (any revision) is Ready
    failure: str | None = None

    def as_status(self) -> JSON:
        return {
            "name": self.name,
            "index": self.index,
            "symbols": list(self.symbols),
            "pod": self.pod,
            "phase": self.phase,
            "revision": self.revision,
        }


@dataclass
class Plan:
    assignment: Assignment
    shards: list[ShardState]
    actions: list[Action]
    conflicts: list[str] = field(default_factory=list)
    events: list[Action] = field(default_factory=list)  # notable non-API happenings (rollouts)


def previous_assignment(status: Mapping[str, Any], pods: Sequence[Observed]) -> dict[int, tuple[str, ...]]:
    """The recorded assignment; without one (status never written), the newest pod per shard."""
    recorded = status.get("shards") or []
    if recorded:
        return {int(s["index"]): tuple(s.get("symbols") or ()) for s in recorded}
    newest: dict[int, Observed] = {}
    for p in pods:
        if p.shard is None or p.symbols is None:
            continue
        if p.shard not in newest or p.created > newest[p.shard].created:
            newest[p.shard] = p
    return {i: p.symbols or () for i, p in sorted(newest.items())}


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
    """A merge patch that brings a configmap or service back to what the operator wrote."""
    patch: JSON = {}
    meta = meta_drift(obs, desired)
    if meta:
        patch["metadata"] = meta
    if obs.content != content_digest(obs.kind, desired):
        if obs.kind == "ConfigMap":
            data = dict(desired["data"])
            data.update({k: None for k in obs.keys if k not in data})
            patch["data"] = data
        else:
            spec = dict(desired["spec"])
            sel = dict(spec["selector"])
            sel.update({k: None for k in obs.keys if k not in sel})
            spec["selector"] = sel
            patch["spec"] = spec
    return patch or None


_RENDERED: OrderedDict[tuple[str, str, int, tuple[str, ...], int], render.ShardObjects] = OrderedDict()


def render_cached(
    feed: DataFeed, uid: str, index: int, symbols: Sequence[str], config: OperatorConfig
) -> render.ShardObjects:
    """render_shard, memoized: every resync pass re-plans, and rendering dominates planning."""
    key = (feed.model_dump_json(), uid, index, tuple(symbols), id(config))
    hit = _RENDERED.get(key)
    if hit is not None:
        _RENDERED.move_to_end(key)
        return hit
    out = render.render_shard(feed, uid, index, symbols, config)
    _RENDERED[key] = out
    if len(_RENDERED) > 4096:
        _RENDERED.popitem(last=False)
    return out


def plan(
    feed: DataFeed, uid: str, status: Mapping[str, Any], observed: Sequence[Observed], config: OperatorConfig
) -> Plan:
    """Everything that must happen for the children to match the DataFeed, in order."""
    ours = [o for o in observed if uid in o.owner_uids]
    pods = [o for o in ours if o.kind == "Pod"]
    cms = {o.name: o for o in ours if o.kind == "ConfigMap"}
    svcs = {o.name: o for o in ours if o.kind == "Service"}
    foreign = {(o.kind, o.name) for o in observed if uid not in o.owner_uids}
    previous = previous_assignment(status, pods)
    assignment = assign(previous, feed.spec.symbols, feed.spec.sharding.max_symbols_per_pod)

    creates: list[Action] = []
    patches: list[Action] = []
    deletes: list[Action] = []
    events: list[Action] = []
    shards: list[ShardState] = []
    conflicts: list[str] = []
    wanted_cms: set[str] = set()
    wanted_svcs: set[str] = set()
    wanted_pods: set[str] = set()
    df = feed.metadata.name

    for index, symbols in assignment.items():
        d = render_cached(feed, uid, index, symbols, config)
        wanted_svcs.add(d.service_name)
        wanted_cms.add(d.configmap_name)
        wanted_pods.add(d.pod_name)

        # The Service (one per shard, across revisions) and the current revision's ConfigMap:
        # created when missing, restored when edited by hand.
        for kind, name, existing, desired in (
            ("Service", d.service_name, svcs.get(d.service_name), d.service),
            ("ConfigMap", d.configmap_name, cms.get(d.configmap_name), d.configmap),
        ):
            noun = kind.lower()
            if (kind, name) in foreign:
                conflicts.append(f"{noun} {name} exists and is not owned by this DataFeed")
            elif existing is None:
                creates.append(
                    Action(
                        "create",
                        kind,
                        name,
                        desired,
                        reason=f"Created{kind}",
                        message=f"shard {index}: created {noun} {name}",
                    )
                )
            elif (fix := restore_patch(existing, desired)) is not None:
                patches.append(
                    Action(
                        "patch",
                        kind,
                        name,
                        fix,
                        reason="DriftRestored",
                        warning=True,
                        message=f"shard {index}: {noun} {name} was changed by hand; restored",
                    )
                )

        # Pods: the current revision, and older ones kept until it is Ready.
        shard_pods = [o for o in pods if o.shard == index or o.name == d.pod_name]
        current = next((o for o in shard_pods if o.name == d.pod_name), None)
        older = [o for o in shard_pods if o.name != d.pod_name and not o.deleting]
        serving = any(o.ready and not o.deleting for o in shard_pods)
        failure: str | None = None
        phase: ShardPhase
        if ("Pod", d.pod_name) in foreign:
            conflicts.append(f"pod {d.pod_name} exists and is not owned by this DataFeed")
            phase = "Pending"
        elif current is None:
            creates.append(
                Action(
                    "create",
                    "Pod",
                    d.pod_name,
                    d.pod,
                    reason="CreatedPod",
                    message=f"shard {index}: created pod {d.pod_name} for {', '.join(symbols)}",
                )
            )
            if older:
                phase = "RollingOut"
                events.append(
                    Action(
                        "create",
                        "Pod",
                        d.pod_name,
                        reason="RolloutStarted",
                        message=(
                            f"shard {index}: starting {d.pod_name} next to {', '.join(o.name for o in older)}; "
                            "the old pod stays until the new one is Ready"
                        ),
                    )
                )
            else:
                # Created in this pass: the same phase it has once it shows up, so the status
                # does not change (and is not rewritten) when the watch delivers it.
                phase = "Starting"
        elif current.deleting:
            phase = "RollingOut" if older else "Pending"  # a namesake is terminating; recreate after
        elif current.content != content_digest("Pod", d.pod):
            deletes.append(
                Action(
                    "delete",
                    "Pod",
                    current.name,
                    uid=current.uid,
                    reason="DriftRestored",
                    warning=True,
                    message=f"shard {index}: pod {current.name} was edited by hand; recreating",
                )
            )
            phase = "RollingOut" if older else "Pending"
        elif current.terminated:
            # Failed/Succeeded pods never run again (e.g. evicted): replace them.
            deletes.append(
                Action(
                    "delete",
                    "Pod",
                    current.name,
                    uid=current.uid,
                    reason="ReplacingFailedPod",
                    warning=True,
                    message=f"shard {index}: pod {current.name} {current.failure}; replacing",
                )
            )
            phase, failure = "Failed", current.failure
        else:
            if (m := meta_drift(current, d.pod)) is not None:
                patches.append(
                    Action(
                        "patch",
                        "Pod",
                        current.name,
                        {"metadata": m},
                        reason="DriftRestored",
                        warning=True,
                        message=f"shard {index}: labels of pod {current.name} restored",
                    )
                )
            if current.ready:
                phase = "Ready"
                for old in older:
                    deletes.append(
                        Action(
                            "delete",
                            "Pod",
                            old.name,
                            uid=old.uid,
                            reason="DeletedPod",
                            message=(f"shard {index}: {d.pod_name} is Ready; deleted the replaced pod {old.name}"),
                        )
                    )
                if older:
                    events.append(
                        Action(
                            "delete",
                            "Pod",
                            d.pod_name,
                            reason="RolloutComplete",
                            message=f"shard {index}: now served by {d.pod_name}",
                        )
                    )
            elif current.failure is not None:
                phase, failure = "Failed", current.failure
            else:
                phase = "RollingOut" if older else "Starting"
        shards.append(
            ShardState(
                index, render.shard_name(df, index), tuple(symbols), d.pod_name, d.revision, phase, serving, failure
            )
        )

    # Children of shards that no longer exist, or of revisions no pod uses any more.
    live_pod_names = {p.name for p in pods if not p.deleting}
    for pod in pods:
        if pod.name not in wanted_pods and not pod.deleting and (pod.shard is None or pod.shard not in assignment):
            deletes.append(
                Action(
                    "delete",
                    "Pod",
                    pod.name,
                    uid=pod.uid,
                    reason="DeletedPod",
                    message=f"deleted pod {pod.name}: its shard has no symbols left",
                )
            )
            live_pod_names.discard(pod.name)
    for d_name in [a.name for a in deletes if a.kind == "Pod"]:
        live_pod_names.discard(d_name)
    for name, cm in cms.items():
        if name not in wanted_cms and name not in live_pod_names and not cm.deleting:
            deletes.append(
                Action(
                    "delete",
                    "ConfigMap",
                    name,
                    uid=cm.uid,
                    reason="DeletedConfigMap",
                    message=f"deleted configmap {name}: no pod uses it",
                )
            )
    for name, svc in svcs.items():
        if name not in wanted_svcs and not svc.deleting:
            deletes.append(
                Action(
                    "delete",
                    "Service",
                    name,
                    uid=svc.uid,
                    reason="DeletedService",
                    message=f"deleted service {name}: its shard has no symbols left",
                )
            )
    # Order: configmaps and services before the pods that use them; deletions last.
    creates.sort(key=lambda a: a.kind == "Pod")
    return Plan(assignment, shards, creates + patches + deletes, conflicts, events)


# ---------------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------------


def set_condition(
    conditions: list[JSON], type_: str, status: bool, reason: str, message: str, generation: int | None, now: str
) -> list[JSON]:
    """Upsert a condition; lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    old = next((c for c in conditions if c.get("type") == type_), None)
    since = old["lastTransitionTime"] if old and old.get("status") == value and old.get("lastTransitionTime") else now
    new: JSON = {"type": type_, "status": value, "reason": reason, "message": message, "lastTransitionTime": since}
    if generation is not None:
        new["observedGeneration"] = generation
    return [c for c in conditions if c.get("type") != type_] + [new]


CONDITION_ORDER = ("Ready", "Progressing", "Degraded", "InvalidSpec")


def _sorted(conditions: list[JSON]) -> list[JSON]:
    return sorted(conditions, key=lambda c: CONDITION_ORDER.index(c["type"]) if c["type"] in CONDITION_ORDER else 9)


def build_status(
    p: Plan,
    previous: Mapping[str, Any],
    generation: int | None,
    errors: Sequence[str] = (),
    now: str | None = None,
) -> JSON:
    now = now or now_rfc3339()
    conditions = [dict(c) for c in previous.get("conditions") or []]
    total = len(p.shards)
    ready = sum(1 for s in p.shards if s.phase == "Ready")
    all_ready = total > 0 and ready == total and not p.conflicts
    conditions = set_condition(
        conditions,
        "Ready",
        all_ready,
        "AllShardsReady" if all_ready else "ShardsNotReady",
        f"{ready}/{total} shards ready",
        generation,
        now,
    )
    rolling = [s for s in p.shards if s.phase == "RollingOut"]
    starting = [s for s in p.shards if s.phase in ("Pending", "Starting")]
    progressing = bool(rolling or starting or any(a.verb == "delete" for a in p.actions))
    if rolling:
        reason = "RollingOut"
        msg = "replacing shards " + ", ".join(f"{s.index} (new pod {s.pod})" for s in rolling)
    elif starting:
        reason, msg = "Starting", "waiting for shards " + ", ".join(str(s.index) for s in starting)
    elif progressing:
        reason, msg = "CleaningUp", "removing children that are no longer needed"
    else:
        reason, msg = "Complete", f"all {total} shards run revision-matched pods"
    conditions = set_condition(conditions, "Progressing", progressing, reason, msg, generation, now)
    prev_phase = {int(s["index"]): s.get("phase") for s in previous.get("shards") or []}
    failed = [s for s in p.shards if s.phase == "Failed"]
    lost = [s for s in p.shards if prev_phase.get(s.index) == "Ready" and not s.serving and s.phase != "Ready"]
    if errors:
        degraded, reason, msg = True, "ReconcileError", "; ".join(errors)
    elif p.conflicts:
        degraded, reason, msg = True, "NameConflict", "; ".join(p.conflicts)
    elif failed:
        degraded, reason = True, "ShardFailed"
        msg = "; ".join(f"shard {s.index}: {s.failure}" for s in failed)
    elif lost:
        degraded, reason = True, "ShardLost"
        msg = "shards without a ready pod: " + ", ".join(str(s.index) for s in lost)
    else:
        degraded, reason, msg = False, "AsExpected", "every shard is served or starting normally"
    conditions = set_condition(conditions, "Degraded", degraded, reason, msg, generation, now)
    conditions = set_condition(conditions, "InvalidSpec", False, "SpecValid", "the spec is valid", generation, now)
    return {
        "observedGeneration": generation,
        "conditions": _sorted(conditions),
        "shards": [s.as_status() for s in p.shards],
        "shardCount": total,
        "readyShards": ready,
        "symbolCount": sum(len(s.symbols) for s in p.shards),
    }


def invalid_status(previous: Mapping[str, Any], message: str, generation: int | None, now: str | None = None) -> JSON:
    """InvalidSpec: the children (if any, from an earlier valid spec) are left as they are."""
    now = now or now_rfc3339()
    conditions = [dict(c) for c in previous.get("conditions") or []]
    conditions = set_condition(conditions, "InvalidSpec", True, "InvalidSpec", message, generation, now)
    conditions = set_condition(
        conditions, "Ready", False, "InvalidSpec", "the spec is invalid; see InvalidSpec", generation, now
    )
    conditions = set_condition(
        conditions, "Progressing", False, "InvalidSpec", "nothing to do until the spec is fixed", generation, now
    )
    if not any(c["type"] == "Degraded" for c in conditions):
        conditions = set_condition(conditions, "Degraded", False, "AsExpected", "", generation, now)
    out = dict(previous)
    out["observedGeneration"] = generation
    out["conditions"] = _sorted(conditions)
    out.setdefault("shards", [])
    out.setdefault("shardCount", 0)
    out.setdefault("readyShards", 0)
    out.setdefault("symbolCount", 0)
    return out


def status_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a status patch is needed (transition times alone do not count)."""

    def strip(s: Mapping[str, Any]) -> Any:
        conds = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in s.get("conditions") or []]
        return {**{k: v for k, v in s.items() if k != "conditions"}, "conditions": conds}

    return bool(strip(old) != strip(new))


def condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)
