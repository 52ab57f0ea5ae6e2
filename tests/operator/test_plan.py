"""The pure planner: observed children + DataFeed -> actions and status."""

from __future__ import annotations

import copy
from typing import Any

from svoe.api.datafeed import DataFeed
from svoe.api.load import parse_manifest
from svoe.operator.config import OperatorConfig
from svoe.operator.observe import Observed, observe
from svoe.operator.plan import plan
from svoe.operator.render import render_shard
from svoe.operator.status import build_status, condition, invalid_status, status_changed
from svoe.testing.kube import pod_status

UID = "uid-1"
CONFIG = OperatorConfig()


def feed(symbols: list[str], per_pod: int = 2, **spec: Any) -> DataFeed:
    return parse_manifest(
        {
            "apiVersion": "svoe.io/v1alpha1",
            "kind": "DataFeed",
            "metadata": {"name": "df", "namespace": "ns"},
            "spec": {
                "exchange": "BINANCE",
                "channels": ["trades"],
                "symbols": symbols,
                "sharding": {"maxSymbolsPerPod": per_pod},
                **spec,
            },
        }
    )


def stored(obj: dict[str, Any], n: int, ready: bool = False) -> dict[str, Any]:
    """An object as the API server returns it."""
    o = copy.deepcopy(obj)
    o["metadata"].update(
        {"uid": f"{obj['kind']}-{n}", "resourceVersion": str(n), "creationTimestamp": f"2025-01-01T00:00:{n:02d}Z"}
    )
    if o["kind"] == "Pod":
        o["status"] = pod_status(ready)["status"] if ready else {"phase": "Pending"}
    return o


def running(f: DataFeed, ready: bool = True, symbols_by_shard: dict[int, list[str]] | None = None) -> list[Observed]:
    out = []
    groups = symbols_by_shard or {i: f.spec.symbols[i * 2 : i * 2 + 2] for i in range((len(f.spec.symbols) + 1) // 2)}
    for i, syms in groups.items():
        s = render_shard(f, UID, i, syms, CONFIG)
        out += [observe(stored(s.configmap, i)), observe(stored(s.service, i)), observe(stored(s.pod, i, ready))]
    return out


def verbs(p: Any) -> list[tuple[str, str, str]]:
    return [(a.verb, a.kind, a.name) for a in p.changes]


def test_fresh_datafeed_creates_configmaps_and_services_before_pods() -> None:
    f = feed(["A-X", "B-X", "C-X"])
    p = plan(f, UID, {}, [], CONFIG)
    kinds = [a.kind for a in p.changes]
    assert all(a.verb == "create" for a in p.changes)
    assert kinds.index("Pod") > max(i for i, k in enumerate(kinds) if k != "Pod")
    assert sorted(kinds) == ["ConfigMap", "ConfigMap", "Pod", "Pod", "Service", "Service"]
    st = build_status(p, {}, 1)
    assert condition(st, "Ready")["status"] == "False"  # type: ignore[index]
    assert condition(st, "Progressing")["reason"] == "Starting"  # type: ignore[index]
    assert [s["phase"] for s in st["shards"]] == ["Starting", "Starting"]


def test_everything_ready_means_no_actions_and_ready() -> None:
    f = feed(["A-X", "B-X", "C-X"])
    first = build_status(plan(f, UID, {}, [], CONFIG), {}, 1)
    p = plan(f, UID, first, running(f), CONFIG)
    assert p.changes == []
    st = build_status(p, first, 1)
    assert condition(st, "Ready")["status"] == "True"  # type: ignore[index]
    assert condition(st, "Progressing")["status"] == "False"  # type: ignore[index]
    assert st["readyShards"] == st["shardCount"] == 2


def test_changed_shard_is_replaced_make_before_break() -> None:
    old = feed(["A-X", "B-X", "C-X", "D-X"])
    status = build_status(plan(old, UID, {}, [], CONFIG), {}, 1)
    observed = running(old)
    new = feed(["A-X", "B-X", "C-X", "E-X"])
    p = plan(new, UID, status, observed, CONFIG)
    new_shard = render_shard(new, UID, 1, ["C-X", "E-X"], CONFIG)
    assert verbs(p) == [("create", "ConfigMap", new_shard.configmap_name), ("create", "Pod", new_shard.pod_name)]
    st = build_status(p, status, 2)
    assert [s["phase"] for s in st["shards"]] == ["Ready", "RollingOut"]
    assert condition(st, "Progressing")["reason"] == "RollingOut"  # type: ignore[index]
    assert condition(st, "Degraded")["status"] == "False", "the old pod still serves"  # type: ignore[index]
    assert [e.reason for e in p.notices] == ["RolloutStarted"]

    # The new pod exists but is not ready: wait, delete nothing.
    with_new = [*observed, observe(stored(new_shard.configmap, 10)), observe(stored(new_shard.pod, 11))]
    assert plan(new, UID, st, with_new, CONFIG).changes == []
    # Ready: now the old pod and its configmap go.
    ready = [*observed, observe(stored(new_shard.configmap, 10)), observe(stored(new_shard.pod, 11, True))]
    p = plan(new, UID, st, ready, CONFIG)
    old_shard = render_shard(old, UID, 1, ["C-X", "D-X"], CONFIG)
    assert verbs(p) == [("delete", "Pod", old_shard.pod_name), ("delete", "ConfigMap", old_shard.configmap_name)]
    assert [e.reason for e in p.notices] == ["RolloutComplete"]


def test_hand_edits_are_restored() -> None:
    f = feed(["A-X"])
    s = render_shard(f, UID, 0, ["A-X"], CONFIG)
    cm = stored(s.configmap, 1)
    cm["data"]["datafeed.yaml"] = "edited"
    cm["data"]["extra"] = "x"
    svc = stored(s.service, 2)
    svc["spec"]["selector"] = {"app": "other"}
    pod = stored(s.pod, 3, True)
    del pod["metadata"]["labels"]["svoe.io/datafeed"]
    p = plan(f, UID, {}, [observe(cm), observe(svc), observe(pod)], CONFIG)
    acts = {(a.verb, a.kind): a for a in p.changes}
    assert set(acts) == {("patch", "ConfigMap"), ("patch", "Service"), ("patch", "Pod")}
    assert acts["patch", "ConfigMap"].body["data"] == {**s.configmap["data"], "extra": None}  # type: ignore[index]
    assert acts["patch", "Service"].body["spec"]["selector"] == {**s.service["spec"]["selector"], "app": None}  # type: ignore[index]
    assert acts["patch", "Pod"].body == {"metadata": {"labels": {"svoe.io/datafeed": "df"}}}
    assert all(a.notice is not None and a.notice.reason == "DriftRestored" for a in p.changes)

    edited = stored(s.pod, 4, True)
    edited["spec"]["containers"][1]["image"] = "evil/image:latest"
    p = plan(f, UID, {}, [observe(stored(s.configmap, 1)), observe(stored(s.service, 2)), observe(edited)], CONFIG)
    assert verbs(p) == [("delete", "Pod", s.pod_name)]


def test_objects_of_others_are_never_touched() -> None:
    f = feed(["A-X"])
    s = render_shard(f, UID, 0, ["A-X"], CONFIG)
    foreign = stored(s.pod, 1, True)
    foreign["metadata"]["ownerReferences"] = []
    p = plan(f, UID, {}, [observe(foreign)], CONFIG)
    assert ("Pod", s.pod_name) not in {(a.kind, a.name) for a in p.changes}
    st = build_status(p, {}, 1)
    assert condition(st, "Degraded")["reason"] == "NameConflict"  # type: ignore[index]
    assert condition(st, "Ready")["status"] == "False"  # type: ignore[index]


def test_assignment_survives_a_lost_status_through_pod_annotations() -> None:
    # Shards {0: A C, 1: B} were assigned earlier (not the spec-order chunking); the status was
    # never written. The pods' annotations carry the assignment, so nothing is moved.
    f = feed(["A-X", "B-X", "C-X"])
    observed = running(f, symbols_by_shard={0: ["A-X", "C-X"], 1: ["B-X"]})
    p = plan(f, UID, {}, observed, CONFIG)
    assert p.assignment == {0: ("A-X", "C-X"), 1: ("B-X",)}
    assert p.changes == []


def test_failed_pod_is_replaced_and_reported() -> None:
    f = feed(["A-X"])
    s = render_shard(f, UID, 0, ["A-X"], CONFIG)
    pod = stored(s.pod, 3)
    pod["status"] = {"phase": "Failed", "reason": "Evicted"}
    p = plan(f, UID, {}, [observe(stored(s.configmap, 1)), observe(stored(s.service, 2)), observe(pod)], CONFIG)
    assert verbs(p) == [("delete", "Pod", s.pod_name)]
    st = build_status(p, {}, 1)
    assert condition(st, "Degraded")["reason"] == "ShardFailed"  # type: ignore[index]
    assert "Evicted" in condition(st, "Degraded")["message"]  # type: ignore[index]


def test_crashlooping_pod_is_degraded_but_left_to_the_kubelet() -> None:
    f = feed(["A-X"])
    s = render_shard(f, UID, 0, ["A-X"], CONFIG)
    pod = stored(s.pod, 3)
    pod["status"] = {
        "phase": "Running",
        "containerStatuses": [{"name": "collector", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
    }
    p = plan(f, UID, {}, [observe(stored(s.configmap, 1)), observe(stored(s.service, 2)), observe(pod)], CONFIG)
    assert p.changes == []
    assert "collector: CrashLoopBackOff" in condition(build_status(p, {}, 1), "Degraded")["message"]  # type: ignore[index]


def test_removed_shard_children_are_deleted() -> None:
    old = feed(["A-X", "B-X", "C-X"])
    status = build_status(plan(old, UID, {}, [], CONFIG), {}, 1)
    p = plan(feed(["A-X", "B-X"]), UID, status, running(old), CONFIG)
    gone = render_shard(old, UID, 1, ["C-X"], CONFIG)
    assert sorted(verbs(p)) == sorted(
        [
            ("delete", "Pod", gone.pod_name),
            ("delete", "ConfigMap", gone.configmap_name),
            ("delete", "Service", gone.service_name),
        ]
    )


def test_conditions_keep_transition_times_and_status_changes_are_detected() -> None:
    f = feed(["A-X"])
    p = plan(f, UID, {}, running(f), CONFIG)
    st1 = build_status(p, {}, 1, now="2025-01-01T00:00:00Z")
    st2 = build_status(p, st1, 1, now="2025-01-01T00:05:00Z")
    assert st1 == st2
    assert not status_changed(st1, build_status(p, {}, 1, now="2025-01-02T00:00:00Z"))
    st3 = build_status(p, st1, 2, now="2025-01-01T00:05:00Z")
    assert status_changed(st1, st3) and st3["observedGeneration"] == 2
    bad = invalid_status(st1, "spec.exchange: unknown exchange 'X'", 3, now="2025-01-01T00:06:00Z")
    assert condition(bad, "InvalidSpec")["status"] == "True"  # type: ignore[index]
    assert condition(bad, "Ready")["lastTransitionTime"] == "2025-01-01T00:06:00Z"  # type: ignore[index]
    assert bad["shards"] == st1["shards"], "an invalid spec leaves the running shards alone"
