"""Planning, pure: (DataFeed, its recorded status, the observed children) -> a Plan.

A plan holds the API writes (`Change`s, in order), the events to post (`Notice`s) and the state
of every shard and replica, which the status is built from (status.py). The controller only
executes plans; every decision is here, so every rule is unit-tested without a server:

- the symbol-to-shard assignment comes from the status (or, if the status was never written,
  from the pods' annotations) and changes only where symbols were added or removed;
- each shard runs `spec.replicas` pods; a pod's name carries its replica and the revision of
  what it runs;
- make-before-break for every replica: a changed shard gets a new pod next to the old one, and
  the old one goes only when the new one is Ready *and* every symbol the old pod still has to
  collect is collected by a Ready pod of the new revision (its replacement, or the pod of the
  shard the symbol moved to), so a symbol is never left without a collector;
- one replica of a shard at a time: the next replica rolls only once the previous one's old pod
  is gone, so the other replicas keep covering the shard;
- children edited or deleted by hand are patched back or recreated; a name taken by an object
  the watch does not show is resolved by `resolve_conflict`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from svoe.api.datafeed import DataFeed
from svoe.api.status import ShardPhase
from svoe.api.timestamps import parse_rfc3339
from svoe.operator import render
from svoe.operator.config import OperatorConfig
from svoe.operator.observe import Observed, content_digest, meta_drift, restore_patch
from svoe.operator.sharding import Assignment, assign

JSON = dict[str, Any]


@dataclass(frozen=True)
class Notice:
    """An event to post on the DataFeed."""

    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Change:
    """One write to the API. Its notice is posted once the write succeeded."""

    verb: Literal["create", "patch", "delete"]
    kind: str
    name: str
    body: JSON | None = None  # the object to create, or the merge patch
    uid: str | None = None  # delete precondition: never delete a namesake
    notice: Notice | None = None
    grace_seconds: int | None = None  # delete: 0 removes a pod its kubelet no longer answers for


@dataclass(frozen=True)
class ReplicaState:
    replica: int
    pod: str  # the current revision's pod
    phase: ShardPhase
    serving: bool  # some pod of this replica (any revision) is Ready
    pods: tuple[str, ...] = ()  # its live pods, serving ones first: where its health is read
    message: str | None = None
    failing: bool = False  # its current pod failed or cannot be scheduled (also while rolling out)


@dataclass(frozen=True)
class ShardState:
    index: int
    name: str
    symbols: tuple[str, ...]
    revision: str
    replicas: tuple[ReplicaState, ...]

    @property
    def pod(self) -> str:
        return self.replicas[0].pod

    @property
    def serving(self) -> bool:
        return any(r.serving for r in self.replicas)

    @property
    def phase(self) -> ShardPhase:
        phases = [r.phase for r in self.replicas]
        if "RollingOut" in phases:
            return "RollingOut"
        if all(p == "Ready" for p in phases):
            return "Ready"
        if "Ready" in phases:
            down = ("Failed", "Unschedulable", "Pending", "NotReady")
            return "Degraded" if any(p in down for p in phases) else "Starting"
        for p in ("Failed", "Unschedulable", "NotReady", "Starting"):
            if p in phases:
                return p
        return "Pending"


@dataclass
class Plan:
    assignment: Assignment
    shards: list[ShardState]
    changes: list[Change]
    conflicts: list[str] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)  # to post whatever the writes do


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


FORCE_DELETE_AFTER = 60.0  # seconds past a terminating pod's grace period


def _overdue(pod: Observed, now: float) -> float | None:
    """Seconds a terminating pod is past its grace period and the margin; None if it is not."""
    deadline = parse_rfc3339(pod.deletion_timestamp) if pod.deletion_timestamp else None
    if deadline is None:
        return None
    late = now - deadline.timestamp()
    return late if late > FORCE_DELETE_AFTER else None


def _delete(obs: Observed, reason: str, message: str, warning: bool = False) -> Change:
    return Change("delete", obs.kind, obs.name, uid=obs.uid, notice=Notice(reason, message, warning))


@dataclass
class _Pass:
    """What one planning pass knows about every shard; the per-shard functions read it."""

    feed: DataFeed
    rendered: dict[int, render.ShardObjects]
    pods: list[Observed]
    foreign: set[tuple[str, str]]
    ready_current: set[tuple[int, int]]  # (shard, replica) whose current-revision pod is Ready
    home: dict[str, int]  # symbol -> the shard that collects it now
    current: set[str]  # every current-revision pod name: planned by its shard, never a leftover
    now: float  # unix time of the pass: how long a pod has been terminating
    was_serving: set[str]  # pods the recorded status called Ready (or NotReady since)
    changes: list[Change] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def covered(self, pod: Observed) -> bool:
        """Whether every symbol `pod` still has to collect has a Ready collector of the new revision."""
        replicas = self.feed.spec.replicas
        for symbol in pod.symbols or ():
            shard = self.home.get(symbol)
            if shard is None:
                continue  # no longer collected
            same = pod.replica if pod.replica < replicas else None
            candidates = [same] if same is not None else range(replicas)
            if not any((shard, r) in self.ready_current for r in candidates):
                return False
        return True


def plan(
    feed: DataFeed,
    uid: str,
    status: Mapping[str, Any],
    observed: Sequence[Observed],
    config: OperatorConfig,
    now: float | None = None,
) -> Plan:
    """Everything that must happen for the children to match the DataFeed, in order."""
    ours = [o for o in observed if uid in o.owner_uids]
    pods = [o for o in ours if o.kind == "Pod"]
    assignment = assign(previous_assignment(status, pods), feed.spec.symbols, feed.spec.sharding.max_symbols_per_pod)
    rendered = {i: render_cached(feed, uid, i, symbols, config) for i, symbols in assignment.items()}
    current_names = {name: i for i, d in rendered.items() for name in d.pod_names()}
    state = _Pass(
        feed=feed,
        rendered=rendered,
        pods=pods,
        foreign={(o.kind, o.name) for o in observed if uid not in o.owner_uids},
        ready_current={
            (current_names[p.name], p.replica) for p in pods if p.name in current_names and p.ready and not p.deleting
        },
        home={s: i for i, symbols in assignment.items() for s in symbols},
        current=set(current_names),
        now=time.time() if now is None else now,
        was_serving={
            str(r.get("pod"))
            for s in status.get("shards") or []
            for r in s.get("replicas") or []
            if r.get("phase") in ("Ready", "NotReady")
        },
    )
    cms = {o.name: o for o in ours if o.kind == "ConfigMap"}
    svcs = {o.name: o for o in ours if o.kind == "Service"}
    shards = []
    for index, d in rendered.items():
        _plan_shared(state, index, "Service", svcs.get(d.service_name), d.service)
        _plan_shared(state, index, "ConfigMap", cms.get(d.configmap_name), d.configmap)
        shards.append(_plan_shard(state, index, d))
    _plan_leftovers(state, cms, svcs)
    creates = [c for c in state.changes if c.verb == "create"]
    # Order: configmaps and services before the pods that use them; deletions last.
    creates.sort(key=lambda c: c.kind == "Pod")
    patches = [c for c in state.changes if c.verb == "patch"]
    deletes = [c for c in state.changes if c.verb == "delete"]
    return Plan(assignment, shards, creates + patches + deletes, state.conflicts, state.notices)


def _plan_shared(state: _Pass, index: int, kind: str, existing: Observed | None, desired: JSON) -> None:
    """The Service (one per shard, across revisions) and the current revision's ConfigMap."""
    name, noun = str(desired["metadata"]["name"]), kind.lower()
    if (kind, name) in state.foreign:
        state.conflicts.append(f"{noun} {name} exists and is not owned by this DataFeed")
    elif existing is None:
        state.changes.append(
            Change(
                "create", kind, name, desired, notice=Notice(f"Created{kind}", f"shard {index}: created {noun} {name}")
            )
        )
    elif (fix := restore_patch(existing, desired)) is not None:
        message = f"shard {index}: {noun} {name} was changed by hand; restored"
        state.changes.append(Change("patch", kind, name, fix, notice=Notice("DriftRestored", message, True)))


def _plan_shard(state: _Pass, index: int, d: render.ShardObjects) -> ShardState:
    shard_pods = [o for o in state.pods if o.shard == index or o.name in d.pod_names()]
    replicas = state.feed.spec.replicas

    def older(r: int) -> list[Observed]:
        # Never a current pod of another replica whose labels were edited (it is restored instead).
        return [o for o in shard_pods if o.replica == r and o.name not in state.current and not o.deleting]

    rolling = [r for r in range(replicas) if older(r)]
    states = tuple(_plan_replica(state, index, d, r, shard_pods, older(r), rolling) for r in range(replicas))
    name = render.shard_name(state.feed.metadata.name, index)
    return ShardState(index, name, d.symbols, d.revision, states)


def _plan_replica(
    state: _Pass,
    index: int,
    d: render.ShardObjects,
    r: int,
    shard_pods: list[Observed],
    older: list[Observed],
    rolling: list[int],
) -> ReplicaState:
    desired = d.pods[r]
    name = d.pod_names()[r]
    where = f"shard {index} replica {r}" if state.feed.spec.replicas > 1 else f"shard {index}"
    current = next((o for o in shard_pods if o.name == name), None)
    mine = [o for o in shard_pods if o.replica == r and not o.deleting]
    serving = any(o.ready for o in mine)
    live = tuple(o.name for o in sorted(mine, key=lambda o: not o.ready))

    def replica(phase: ShardPhase, message: str | None = None, failing: bool = False) -> ReplicaState:
        return ReplicaState(r, name, phase, serving, live, message, failing)

    if ("Pod", name) in state.foreign:
        state.conflicts.append(f"pod {name} exists and is not owned by this DataFeed")
        return replica("Pending")
    if current is None:
        if older and r != rolling[0]:
            return replica("RollingOut", f"waits for replica {rolling[0]} to finish rolling out")
        state.changes.append(
            Change(
                "create",
                "Pod",
                name,
                desired,
                notice=Notice("CreatedPod", f"{where}: created pod {name} for {', '.join(d.symbols)}"),
            )
        )
        if not older:
            # Created in this pass: the same phase it has once it shows up, so the status
            # does not change (and is not rewritten) when the watch delivers it.
            if name in state.was_serving:  # it served, and is gone: lost until its namesake is Ready
                return replica("NotReady", f"pod {name} was Ready and is gone; recreated")
            return replica("Starting")
        state.notices.append(
            Notice(
                "RolloutStarted",
                f"{where}: starting {name} next to {', '.join(o.name for o in older)}; "
                "the old pod stays until the new one is Ready",
            )
        )
        return replica("RollingOut")
    rolling_or: ShardPhase = "RollingOut" if older else "Pending"
    if current.deleting:
        # A namesake is terminating; recreated after. One still there well after its grace period
        # ran out has a kubelet that no longer answers (its node is gone): the API keeps it until
        # the Node object goes, so remove it, as the pod garbage collector would then. A second
        # copy is harmless if the node comes back: the replacement is a new writer identity.
        overdue = _overdue(current, state.now)
        if overdue is not None:
            message = f"{where}: pod {current.name} is still terminating {overdue:.0f}s after its grace period; removed"
            state.changes.append(
                Change(
                    "delete",
                    "Pod",
                    current.name,
                    uid=current.uid,
                    grace_seconds=0,
                    notice=Notice("ForceDeletedPod", message, True),
                )
            )
        return replica(rolling_or)
    if current.content != content_digest("Pod", desired):
        state.changes.append(
            _delete(current, "DriftRestored", f"{where}: pod {current.name} was edited by hand; recreating", True)
        )
        return replica(rolling_or)
    if current.terminated:
        # Failed/Succeeded pods never run again (e.g. evicted, or their node was lost): replace them.
        message = f"{where}: pod {current.name} {current.failure}; replacing"
        state.changes.append(_delete(current, "ReplacingFailedPod", message, True))
        return replica("Failed", current.failure, failing=True)
    if (m := meta_drift(current, desired)) is not None:
        message = f"{where}: labels of pod {current.name} restored"
        state.changes.append(
            Change("patch", "Pod", current.name, {"metadata": m}, notice=Notice("DriftRestored", message, True))
        )
    if not current.ready:
        # While an old pod serves, the replica is still rolling out, failing or not: its new pod
        # may be the only one with a newly added symbol.
        if current.failure is not None:
            return replica("RollingOut" if older else "Failed", current.failure, failing=True)
        if current.unschedulable is not None:
            message = f"Unschedulable: {current.unschedulable}"
            return replica("RollingOut" if older else "Unschedulable", message, failing=True)
        if older:
            return replica("RollingOut")
        if current.name in state.was_serving:
            return replica("NotReady", f"pod {current.name} was Ready and is not")
        return replica("Starting")
    waiting = [o for o in older if not state.covered(o)]
    for old in older:
        if old not in waiting:
            message = f"{where}: {name} is Ready; deleted the replaced pod {old.name}"
            state.changes.append(_delete(old, "DeletedPod", message))
    if waiting:
        moved = sorted({s for o in waiting for s in o.symbols or () if state.home.get(s, index) != index})
        return replica(
            "RollingOut", f"{', '.join(o.name for o in waiting)} stays until {', '.join(moved)} are collected"
        )
    if older:
        state.notices.append(Notice("RolloutComplete", f"{where}: now served by {name}"))
    return replica("Ready")


def _plan_leftovers(state: _Pass, cms: Mapping[str, Observed], svcs: Mapping[str, Observed]) -> None:
    """Pods of shards or replicas that no longer exist, and children no pod uses any more."""
    replicas = state.feed.spec.replicas
    df = state.feed.metadata.name
    deleted = {c.name for c in state.changes if c.verb == "delete" and c.kind == "Pod"}
    for pod in state.pods:
        if pod.deleting or pod.name in deleted:
            continue
        if pod.name in state.current:
            continue  # a current pod, whatever its labels say: its shard planned it
        if pod.shard is not None and pod.shard in state.rendered and pod.replica < replicas:
            continue  # the shard's replica planned it
        if not state.covered(pod):
            continue  # its symbols wait for their new collectors
        if pod.shard is not None and pod.shard in state.rendered:
            why = f"replica {pod.replica} is no longer wanted (spec.replicas: {replicas})"
        else:
            why = "its shard has no symbols left"
        state.changes.append(_delete(pod, "DeletedPod", f"deleted pod {pod.name}: {why}"))
        deleted.add(pod.name)
    used = {d.configmap_name for d in state.rendered.values()} | {
        render.configmap_name(df, p.shard, p.revision)
        for p in state.pods
        if p.name not in deleted and not p.deleting and p.shard is not None and p.revision
    }
    for name, cm in cms.items():
        if name not in used and not cm.deleting:
            state.changes.append(_delete(cm, "DeletedConfigMap", f"deleted configmap {name}: no pod uses it"))
    wanted_svcs = {d.service_name for d in state.rendered.values()}
    for name, svc in svcs.items():
        if name not in wanted_svcs and not svc.deleting:
            why = "its shard has no symbols left"
            state.changes.append(_delete(svc, "DeletedService", f"deleted service {name}: {why}"))


def resolve_conflict(
    change: Change, existing: Observed | None, uid: str, datafeed: str
) -> tuple[list[Change], str | None]:
    """A create said AlreadyExists, and `existing` (read back; None: gone meanwhile) has the name.

    Returns the writes that fix it, or an error when the name belongs to someone else.
    """
    assert change.body is not None
    if existing is None:
        return [], None  # deleted meanwhile: the next pass creates it
    noun = change.kind.lower()
    if uid in existing.owner_uids:
        # Ours: either just created (cache lag) or its labels were removed, hiding it from the
        # watch. Restore what differs.
        if change.kind == "Pod":
            if existing.content != content_digest("Pod", change.body):
                return [
                    _delete(existing, "DriftRestored", f"pod {change.name} was edited by hand; recreating", True)
                ], None
            if (m := meta_drift(existing, change.body)) is not None:
                notice = Notice("DriftRestored", f"labels of pod {change.name} restored", True)
                return [Change("patch", "Pod", change.name, {"metadata": m}, notice=notice)], None
            return [], None
        if (patch := restore_patch(existing, change.body)) is not None:
            notice = Notice("DriftRestored", f"{noun} {change.name} was changed by hand; restored", True)
            return [Change("patch", change.kind, change.name, patch, notice=notice)], None
        return [], None
    if datafeed in existing.owner_datafeeds:
        # Left over from an earlier DataFeed of the same name; the garbage collector would get
        # to it, but the name is needed now.
        message = f"deleted {noun} {change.name} of an earlier DataFeed with this name"
        return [_delete(existing, "DeletedLeftover", message)], None
    return [], f"{noun} {change.name} exists and is not owned by this DataFeed"
