"""Building the FeatureSet status, pure: a plan + the featurizer's `/stats` -> the status JSON.

Conditions (the DataFeed's types; docs/contracts.md lists the reasons):
- Ready: the featurizer's Deployment has an available replica and the spec is usable. False with
  SourceNotFound, SourceInvalid or InvalidSpec while the source blocks it, Starting before that.
- Stale: the featurizer reports its source silent (SourceSilent); Unknown until it answered.
- InvalidSpec: the spec does not validate, or does not fit its source (the message names the field).
- Degraded: a write failed or a name is taken by an object the FeatureSet does not own.

Figures (rate, last tick, lag) are only ever the featurizer's own answer: absent without one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from svoe.api.featureset import FeatureSet
from svoe.api.status import ConditionType, FeatureSetStatus
from svoe.api.timestamps import now_rfc3339
from svoe.operator.featureset_plan import FeatureSetPlan
from svoe.operator.health import FeaturizerStats
from svoe.operator.plan import Notice
from svoe.operator.status import condition, read_conditions, set_condition

JSON = dict[str, Any]


def build_featureset_status(
    fs: FeatureSet | None,
    p: FeatureSetPlan,
    previous: Mapping[str, Any],
    generation: int | None,
    stats: FeaturizerStats | None,
    errors: Sequence[str] = (),
    now: str | None = None,
) -> JSON:
    """`fs` is None when the spec itself does not validate (then `p.message` says why)."""
    now = now or now_rfc3339()
    conditions = read_conditions(previous)

    def put(type_: ConditionType, status: bool | None, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type_, status, reason, message, generation, now)

    available = p.deployment.available_replicas if p.deployment is not None else 0
    invalid = p.blocked == "InvalidSpec"
    if invalid:
        put("InvalidSpec", True, "InvalidSpec", p.message)
    else:
        put("InvalidSpec", False, "SpecValid", "the spec is valid")
    if p.blocked is not None:
        put("Ready", False, p.blocked, p.message if not invalid else "the spec is invalid; see InvalidSpec")
    elif p.conflicts:
        put("Ready", False, "NameConflict", "; ".join(p.conflicts))
    elif available > 0:
        put("Ready", True, "Available", f"the featurizer runs, connected to {len(p.endpoints)} shard(s)")
    else:
        put("Ready", False, "Starting", "waiting for the featurizer's pod to become ready")
    if errors:
        put("Degraded", True, "ReconcileError", "; ".join(errors))
    elif p.conflicts:
        put("Degraded", True, "NameConflict", "; ".join(p.conflicts))
    else:
        put("Degraded", False, "AsExpected", "")
    _put_stale(put, stats)

    base = FeatureSetStatus.model_validate(previous) if p.blocked is not None and previous else None
    if base is not None:
        # Blocked: the featurizer of the last good spec (if any) is left alone, and so is its record.
        status = base.model_copy(update={"observed_generation": generation, "conditions": conditions})
    else:
        status = FeatureSetStatus(
            observed_generation=generation,
            conditions=conditions,
            deployment=p.rendered.name if p.rendered is not None else None,
            endpoints=p.endpoints,
            ready_replicas=available,
            symbol_count=len(fs.spec.symbols) if fs is not None else 0,
            feature_count=len(fs.spec.columns()) if fs is not None else 0,
        )
    if stats is not None:
        status = status.model_copy(
            update={
                "rows_per_second": stats.rows_per_second,
                "last_tick": stats.last_tick,
                "lag_seconds": stats.lag_seconds,
                "last_source_event": stats.last_source_event,
                "late_events": stats.late_events,
            }
        )
    else:
        figures = ("rows_per_second", "last_tick", "lag_seconds", "last_source_event", "late_events")
        status = status.model_copy(update=dict.fromkeys(figures))
    return dict(status.model_dump(mode="json", by_alias=True, exclude_none=True))


def _put_stale(put: Any, stats: FeaturizerStats | None) -> None:
    if stats is None or stats.stale is None:
        put("Stale", None, "NotRead", "the featurizer's /stats has not been read")
    elif stats.stale:
        since = f" since {stats.last_source_event}" if stats.last_source_event else ""
        put("Stale", True, "SourceSilent", f"no event from the source DataFeed{since}")
    else:
        put("Stale", False, "RowsFlowing", "the source's events arrive and ticks are emitted")


def blocked_notice(previous: Mapping[str, Any], p: FeatureSetPlan) -> Notice | None:
    """A Warning when the FeatureSet becomes blocked, or blocked for another reason; once."""
    if p.blocked is None:
        return None
    type_ = "InvalidSpec" if p.blocked == "InvalidSpec" else "Ready"
    old = condition(previous, type_)
    if old and old.get("reason") == p.blocked and (type_ == "Ready" or old.get("message") == p.message):
        return None
    keeps = "; the running featurizer is left as it is" if p.deployment is not None else "; no featurizer is created"
    return Notice(p.blocked, f"{p.message}{keeps}"[:1024], warning=True)
