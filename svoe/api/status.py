"""The DataFeed status as pydantic models: the operator writes it through them, the CRD publishes
their schema (svoe/api/crd.py), and readers (tests, `kubectl get df`) see the same names.

Health figures (`lastEventTime`, `eventsPerSecond`, `backlog`, `gapsLastHour`) come from each
feed pod's `/stats` endpoint (docs/contracts.md); they are absent until the operator has read it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

ConditionType = Literal["Ready", "Progressing", "Degraded", "Stale", "InvalidSpec"]
CONDITION_ORDER: tuple[ConditionType, ...] = ("Ready", "Progressing", "Degraded", "Stale", "InvalidSpec")

# A replica's phase; a shard's phase summarises its replicas'. NotReady: was Ready, is not (a
# container restarting, a node unreachable). Degraded (shards only): some replica serves, another
# is down.
ShardPhase = Literal["Pending", "Unschedulable", "Starting", "Ready", "NotReady", "Degraded", "RollingOut", "Failed"]


class _StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=AliasGenerator(alias=to_camel), populate_by_name=True, extra="ignore")


class Condition(_StatusModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, Field(description="CamelCase reason for the last transition.")]
    message: str = ""
    last_transition_time: Annotated[str, Field(description="RFC 3339 time of the last status change.")]
    observed_generation: int | None = None


class Health(_StatusModel):
    """What a collector reported at its last `/stats` read."""

    last_event_time: Annotated[str | None, Field(description="Receipt time of the newest event (RFC 3339).")] = None
    events_per_second: Annotated[float | None, Field(description="Events buffered per second, last minute.")] = None
    backlog: Annotated[int | None, Field(description="Buffered entries the lake writer has not stored yet.")] = None
    gaps_last_hour: Annotated[int | None, Field(description="Sequence gaps and disconnects in the last hour.")] = None


class ReplicaStatus(Health):
    """One replica of a shard: its current pod and what it reports."""

    replica: Annotated[int, Field(ge=0)]
    pod: Annotated[str, Field(description="The pod of the shard's current revision for this replica.")]
    phase: ShardPhase
    message: Annotated[str | None, Field(description="Why the replica is not running, if it is not.")] = None


class ShardStatus(Health):
    """One shard: its symbols and replicas. Rate and newest event are the best replica's (the view merges replicas), gaps the fewest any replica saw, backlog the largest."""  # noqa: E501

    name: str
    index: Annotated[int, Field(ge=0)]
    symbols: list[str]
    pod: Annotated[str | None, Field(description="Replica 0's pod of the shard's current revision.")] = None
    phase: ShardPhase
    revision: str | None = None
    ready_replicas: int = 0
    replicas: list[ReplicaStatus] = []


class DataFeedStatus(Health):
    """The DataFeed's rate is its shards' total; its last event is the stalest shard's newest."""

    observed_generation: Annotated[int | None, Field(description="The generation the status describes.")] = None
    conditions: list[Condition] = []
    shards: Annotated[
        list[ShardStatus], Field(description="The stable symbol-to-shard assignment and the state of each shard.")
    ] = []
    shard_count: int = 0
    ready_shards: int = 0
    replicas: int = 0
    ready_replicas: int = 0
    symbol_count: int = 0


class FeatureSetStatus(_StatusModel):
    """A FeatureSet's featurizer: its Deployment, where it reads from, and what its `/stats` said last.

    The figures are the featurizer's own (never estimated by the operator): absent until it answered."""

    observed_generation: Annotated[int | None, Field(description="The generation the status describes.")] = None
    conditions: list[Condition] = []
    deployment: Annotated[str | None, Field(description="The featurizer's Deployment.")] = None
    endpoints: Annotated[
        list[str], Field(description="The source DataFeed's shard endpoints the featurizer connects to (tcp://).")
    ] = []
    ready_replicas: int = 0
    symbol_count: int = 0
    feature_count: Annotated[int, Field(description="Output columns per symbol and tick.")] = 0
    rows_per_second: Annotated[float | None, Field(description="Rows emitted per second, last minute.")] = None
    last_tick: Annotated[str | None, Field(description="The newest emitted tick (RFC 3339).")] = None
    lag_seconds: Annotated[float | None, Field(description="Wall clock minus the newest emitted tick.")] = None
    last_source_event: Annotated[str | None, Field(description="Receipt time of the newest source event.")] = None
    late_events: Annotated[int | None, Field(description="Source events that arrived after their tick closed.")] = None
