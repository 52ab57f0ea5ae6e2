"""Planning a FeatureSet, pure: (FeatureSet, its source DataFeed, the observed children) -> a plan.

Every decision is here, unit-tested without a server; the controller only executes:

- the source must exist (else Ready False, SourceNotFound), be a valid DataFeed (SourceInvalid)
  and serve its live stream to other pods, and collect the FeatureSet's exchange, symbols and
  channels (else InvalidSpec, naming the field: `check_against_source`). While it is not usable,
  nothing is written: a featurizer of an earlier good spec keeps running;
- the `--connect` endpoints are the source's current shards (its status' assignment; before the
  DataFeed's first status, the assignment it starts from), so the featurizer follows reshards;
- the ConfigMap, Deployment and Service are created when missing and patched back when they
  differ from the rendering (a spec change, a reshard, or an edit by hand).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from svoe.api.datafeed import DataFeed
from svoe.api.featureset import FeatureSet, check_against_source, is_manifest_path
from svoe.operator.config import OperatorConfig
from svoe.operator.featureset_render import FeaturizerObjects, endpoints, render_featurizer
from svoe.operator.observe import Observed, restore_patch
from svoe.operator.parse import InvalidSpec, parse_resource
from svoe.operator.plan import Change, Notice
from svoe.operator.sharding import Assignment, initial_assignment

Blocked = Literal["SourceNotFound", "SourceInvalid", "InvalidSpec"]


@dataclass
class FeatureSetPlan:
    changes: list[Change]
    endpoints: list[str] = field(default_factory=list)
    blocked: Blocked | None = None  # why nothing is rendered
    message: str = ""  # what blocks it, `field: problem` lines joined by "; "
    deployment: Observed | None = None
    rendered: FeaturizerObjects | None = None
    conflicts: list[str] = field(default_factory=list)


def source_name(fs: FeatureSet) -> str | None:
    """The source DataFeed's name; None when spec.source is a manifest path (only usable locally)."""
    return None if is_manifest_path(fs.spec.source) else fs.spec.source


def parse_source(doc: Mapping[str, Any]) -> DataFeed | str:
    """The source DataFeed, or why it does not validate."""
    try:
        return parse_resource(DataFeed, {**doc, "apiVersion": "svoe.io/v1alpha1", "kind": "DataFeed"})
    except InvalidSpec as err:
        return str(err)


def source_assignment(feed: DataFeed, status: Mapping[str, Any]) -> Assignment:
    """The shards the DataFeed runs: its recorded assignment, or the one its first pass makes."""
    recorded = status.get("shards") or []
    if recorded:
        return {int(s["index"]): tuple(s.get("symbols") or ()) for s in recorded}
    return initial_assignment(feed.spec.symbols, feed.spec.sharding.max_symbols_per_pod)


def source_problems(fs: FeatureSet, feed: DataFeed) -> list[str]:
    spec = feed.spec
    problems = check_against_source(fs.spec, spec.exchange, list(spec.channels), list(spec.symbols), feed.name)
    if not spec.live.served_to_other_pods():
        problems.append(
            f"source: the DataFeed {feed.name} does not serve its live stream to other pods "
            "(set its spec.live.enabled true and spec.live.bind to a non-loopback address, or leave bind unset)"
        )
    return problems


def plan_featureset(
    fs: FeatureSet,
    uid: str,
    source: Mapping[str, Any] | None,
    observed: Sequence[Observed],
    config: OperatorConfig,
) -> FeatureSetPlan:
    """What must happen for the featurizer to match the FeatureSet and its source."""
    ours = {o.kind: o for o in observed if uid in o.owner_uids and o.kind in ("ConfigMap", "Deployment", "Service")}
    out = FeatureSetPlan(changes=[], deployment=ours.get("Deployment"))
    name = source_name(fs)
    if name is None:
        out.blocked, out.message = (
            "InvalidSpec",
            (f"source: {fs.spec.source!r} is a manifest path; in a cluster it names a DataFeed of the namespace"),
        )
        return out
    if source is None:
        out.blocked = "SourceNotFound"
        out.message = f"the source DataFeed {name} does not exist in namespace {fs.metadata.namespace}"
        return out
    feed = parse_source(source)
    if isinstance(feed, str):
        out.blocked, out.message = "SourceInvalid", f"the source DataFeed {name} is invalid: {feed}"
        return out
    problems = source_problems(fs, feed)
    if problems:
        out.blocked, out.message = "InvalidSpec", "; ".join(problems)
        return out
    out.endpoints = endpoints(feed, source_assignment(feed, source.get("status") or {}))
    d = render_featurizer(fs, uid, out.endpoints, config)
    out.rendered = d
    foreign = {(o.kind, o.name) for o in observed if uid not in o.owner_uids}
    for desired in (d.configmap, d.service, d.deployment):
        kind, obj_name = str(desired["kind"]), str(desired["metadata"]["name"])
        if (kind, obj_name) in foreign:
            out.conflicts.append(f"{kind.lower()} {obj_name} exists and is not owned by this FeatureSet")
            continue
        existing = ours.get(kind)
        if existing is None or existing.name != obj_name:
            notice = Notice(f"Created{kind}", f"created {kind.lower()} {obj_name}")
            out.changes.append(Change("create", kind, obj_name, desired, notice=notice))
        elif (fix := restore_patch(existing, desired)) is not None:
            notice = Notice("Updated" + kind, _update_message(kind, obj_name, out.endpoints))
            out.changes.append(Change("patch", kind, obj_name, fix, notice=notice))
    return out


def _update_message(kind: str, name: str, connect: list[str]) -> str:
    if kind == "Deployment":
        return f"deployment {name} updated; it connects to {', '.join(connect)}"
    return f"{kind.lower()} {name} brought back to the FeatureSet's rendering"
