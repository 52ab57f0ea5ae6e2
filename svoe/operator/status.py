"""Building the DataFeed status, pure: a Plan (+ the pods' health) -> the status models -> JSON.

Conditions:
- Ready: every shard has a Ready pod and none is rolling out. Never True while every replica
  of a shard is down.
- Progressing: pods starting, rolling out, or children being cleaned up.
- Degraded: something needs a look: a write failed, a name conflict, a replica failed, cannot
  be scheduled, or stopped being Ready. With replicas the shard may still be covered; the
  message says so (reason ReplicaDown), while ShardFailed/ShardLost mean nobody collects it.
- Stale: some shard's newest event is older than the operator's `stale_after_seconds`
  (Unknown until every shard's health was read).
- InvalidSpec: the spec does not validate; the children of the last valid spec are kept.

The events these transitions post are decided here too (`transition_notices`).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

from svoe.api.status import (
    CONDITION_ORDER,
    Condition,
    ConditionType,
    DataFeedStatus,
    ReplicaStatus,
    ShardStatus,
)
from svoe.api.timestamps import now_rfc3339, parse_rfc3339
from svoe.operator.health import PodStats, event_age, feed_health, pod_health, shard_health
from svoe.operator.plan import Notice, Plan, ShardState
from svoe.operator.sharding import Assignment

JSON = dict[str, Any]


def set_condition(
    conditions: list[Condition],
    type_: ConditionType,
    status: bool | None,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[Condition]:
    """Upsert a condition; lastTransitionTime moves only when the status flips. None: Unknown."""
    value = "Unknown" if status is None else "True" if status else "False"
    old = next((c for c in conditions if c.type == type_), None)
    since = old.last_transition_time if old and old.status == value else now
    new = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    out = [c for c in conditions if c.type != type_] + [new]
    return sorted(out, key=lambda c: CONDITION_ORDER.index(c.type))


def read_conditions(previous: Mapping[str, Any]) -> list[Condition]:
    out = []
    for raw in previous.get("conditions") or []:
        try:
            out.append(Condition.model_validate(raw))
        except ValueError:
            continue  # a condition type this operator does not write
    return out


def _replica_status(
    shard: ShardState, health: Mapping[str, PodStats], now: datetime.datetime
) -> tuple[list[ReplicaStatus], float | None]:
    replicas, ages = [], []
    for r in shard.replicas:
        stats = next((health[p] for p in r.pods if p in health), None)
        h = pod_health(stats)
        replicas.append(ReplicaStatus(replica=r.replica, pod=r.pod, phase=r.phase, message=r.message, **dict(h)))
        if stats is not None and (age := event_age(h, stats.since, now)) is not None:
            ages.append(age)
    # The shard's age is its freshest replica's: one replica collecting is enough.
    return replicas, min(ages) if ages else None


def build_status(
    p: Plan,
    previous: Mapping[str, Any],
    generation: int | None,
    errors: Sequence[str] = (),
    health: Mapping[str, PodStats] | None = None,
    stale_after: float = 120.0,
    now: str | None = None,
) -> JSON:
    now = now or now_rfc3339()
    now_dt = parse_rfc3339(now) or datetime.datetime.now(datetime.UTC)
    health = health or {}
    shards: list[ShardStatus] = []
    ages: dict[int, float | None] = {}
    for s in p.shards:
        replicas, ages[s.index] = _replica_status(s, health, now_dt)
        merged = shard_health(replicas)
        shards.append(
            ShardStatus(
                name=s.name,
                index=s.index,
                symbols=list(s.symbols),
                pod=s.pod,
                phase=s.phase,
                revision=s.revision,
                ready_replicas=sum(1 for r in s.replicas if r.serving),
                replicas=replicas,
                **dict(merged),
            )
        )
    total = len(p.shards)
    ready = sum(1 for s in p.shards if s.serving and s.phase != "RollingOut")
    conditions = read_conditions(previous)

    def put(type_: ConditionType, status: bool | None, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type_, status, reason, message, generation, now)

    all_ready = total > 0 and ready == total and not p.conflicts
    put("Ready", all_ready, "AllShardsReady" if all_ready else "ShardsNotReady", f"{ready}/{total} shards ready")
    put("Progressing", *_progressing(p))
    put("Degraded", *_degraded(p, errors))
    put("Stale", *_stale(ages, stale_after))
    put("InvalidSpec", False, "SpecValid", "the spec is valid")
    status = DataFeedStatus(
        observed_generation=generation,
        conditions=conditions,
        shards=shards,
        shard_count=total,
        ready_shards=ready,
        replicas=sum(len(s.replicas) for s in p.shards),
        ready_replicas=sum(sh.ready_replicas for sh in shards),
        symbol_count=sum(len(s.symbols) for s in p.shards),
        **dict(feed_health(list(shards))),
    )
    return dump(status)


def dump(status: DataFeedStatus) -> JSON:
    return dict(status.model_dump(mode="json", by_alias=True, exclude_none=True))


def _progressing(p: Plan) -> tuple[bool, str, str]:
    rolling = [s for s in p.shards if s.phase == "RollingOut"]
    starting = [s for s in p.shards if any(r.phase in ("Pending", "Starting") for r in s.replicas)]
    if rolling:
        return (
            True,
            "RollingOut",
            "replacing shards " + ", ".join(f"{s.index} (new pod {_rolling_pod(s)})" for s in rolling),
        )
    if starting:
        return True, "Starting", "waiting for shards " + ", ".join(str(s.index) for s in starting)
    if any(c.verb == "delete" for c in p.changes):
        return True, "CleaningUp", "removing children that are no longer needed"
    return False, "Complete", f"all {len(p.shards)} shards run revision-matched pods"


def _rolling_pod(s: ShardState) -> str:
    return next((r.pod for r in s.replicas if r.phase == "RollingOut"), s.pod)


def _degraded(p: Plan, errors: Sequence[str]) -> tuple[bool, str, str]:
    if errors:
        return True, "ReconcileError", "; ".join(errors)
    if p.conflicts:
        return True, "NameConflict", "; ".join(p.conflicts)
    down: list[tuple[ShardState, str]] = []
    for s in p.shards:
        for r in s.replicas:
            where = f"shard {s.index}" + (f" replica {r.replica}" if len(s.replicas) > 1 else "")
            if r.phase in ("Failed", "Unschedulable", "NotReady") or r.failing:
                down.append((s, f"{where}: {r.message}"))
    if not down:
        return False, "AsExpected", "every shard is served or starting normally"
    uncovered = [s for s, _ in down if not s.serving]
    text = "; ".join(m for _, m in down)
    if any((r.message or "").startswith("Unschedulable") for s in p.shards for r in s.replicas if r.failing):
        return True, "Unschedulable", text
    if uncovered:
        failed = any(r.failing for s in uncovered for r in s.replicas)
        return True, "ShardFailed" if failed else "ShardLost", text
    return True, "ReplicaDown", f"{text}; every shard is still covered by another replica"


def _stale(ages: Mapping[int, float | None], stale_after: float) -> tuple[bool | None, str, str]:
    stale = sorted(i for i, a in ages.items() if a is not None and a > stale_after)
    if stale:
        # No ages in the text: it would change every pass and rewrite the status for nothing.
        text = ", ".join(f"shard {i}" for i in stale)
        return True, "NoRecentEvents", f"newest event older than {stale_after:g}s: {text}"
    if not ages or any(a is None for a in ages.values()):
        return None, "NotRead", "the health of some shards has not been read yet"
    return False, "EventsFlowing", f"every shard's newest event is under {stale_after:g}s old"


def invalid_status(previous: Mapping[str, Any], message: str, generation: int | None, now: str | None = None) -> JSON:
    """InvalidSpec: the children (if any, from an earlier valid spec) are left as they are."""
    now = now or now_rfc3339()
    conditions = read_conditions(previous)
    for type_, status, reason, text in (
        ("InvalidSpec", True, "InvalidSpec", message),
        ("Ready", False, "InvalidSpec", "the spec is invalid; see InvalidSpec"),
        ("Progressing", False, "InvalidSpec", "nothing to do until the spec is fixed"),
    ):
        conditions = set_condition(conditions, type_, status, reason, text, generation, now)  # type: ignore[arg-type]
    if not any(c.type == "Degraded" for c in conditions):
        conditions = set_condition(conditions, "Degraded", False, "AsExpected", "", generation, now)
    base = DataFeedStatus.model_validate(previous) if previous else DataFeedStatus()
    return dump(base.model_copy(update={"observed_generation": generation, "conditions": conditions}))


def status_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a status patch is needed (transition times alone do not count)."""

    def strip(s: Mapping[str, Any]) -> Any:
        conds = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in s.get("conditions") or []]
        return {**{k: v for k, v in s.items() if k != "conditions"}, "conditions": conds}

    return bool(strip(old) != strip(new))


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> JSON:
    """A merge patch from `old` to `new`. Lists are replaced whole by a merge patch, so only the
    top-level fields `new` no longer has need a null (a merge patch never removes a key otherwise)."""
    return {**{k: None for k in old if k not in new}, **new}


def condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


# -- events -------------------------------------------------------------------------------------


def assignment_notice(previous: Mapping[str, Any], assignment: Assignment) -> Notice | None:
    recorded = {int(s["index"]): tuple(s.get("symbols") or ()) for s in previous.get("shards") or []}
    if recorded == assignment:
        return None
    text = json.dumps({str(k): list(v) for k, v in assignment.items()}, separators=(",", ":"))
    return Notice("ShardsAssigned", f"{len(assignment)} shard(s): {text}"[:1024])


def invalid_notice(previous: Mapping[str, Any], message: str) -> Notice | None:
    old = condition(previous, "InvalidSpec")
    if old and old.get("status") == "True" and old.get("message") == message:
        return None
    return Notice("InvalidSpec", f"{message}; no pods are created", warning=True)


def transition_notices(previous: Mapping[str, Any], status: Mapping[str, Any]) -> list[Notice]:
    out: list[Notice] = []
    before, after = condition(previous, "Ready"), condition(status, "Ready")
    if after is not None:
        was = before is not None and before.get("status") == "True"
        now = after.get("status") == "True"
        if now and not was:
            out.append(Notice("Ready", str(after.get("message"))))
        elif was and not now:
            out.append(Notice("NotReady", str(after.get("message")), warning=True))
    for type_, reason in (("Degraded", "Degraded"), ("Stale", "Stale")):
        b, a = condition(previous, type_), condition(status, type_)
        if (
            a
            and a.get("status") == "True"
            and (not b or b.get("status") != "True" or b.get("reason") != a.get("reason"))
        ):
            out.append(Notice(reason, str(a.get("message")), warning=True))
    return out
