"""The planner with replicas: one pod per replica and shard, rollouts one replica at a time, moved
symbols never left without a collector, and conditions that tell a covered shard from a lost one."""

from __future__ import annotations

import datetime
from typing import Any

from svoe.api.datafeed import DataFeed
from svoe.api.load import ManifestError
from svoe.operator.config import OperatorConfig
from svoe.operator.health import parse_stats
from svoe.operator.observe import Observed, observe
from svoe.operator.plan import Plan, plan
from svoe.operator.render import render_shard
from svoe.operator.status import build_status, condition
from tests.operator.test_plan import UID, stored
from tests.operator.test_plan import feed as one_replica_feed

CONFIG = OperatorConfig()


def feed(symbols: list[str], replicas: int = 2, per_pod: int = 2, **spec: Any) -> DataFeed:
    return one_replica_feed(symbols, per_pod, replicas=replicas, **spec)


def children(f: DataFeed, groups: dict[int, list[str]], ready: bool | dict[str, bool] = True) -> list[Observed]:
    """Every child of `f` as the watch shows it; `ready` per pod name, or for all."""
    out = []
    n = 0
    for i, syms in groups.items():
        s = render_shard(f, UID, i, syms, CONFIG)
        out += [observe(stored(s.configmap, n := n + 1)), observe(stored(s.service, n := n + 1))]
        for pod in s.pods:
            name = pod["metadata"]["name"]
            is_ready = ready if isinstance(ready, bool) else ready.get(name, False)
            out.append(observe(stored(pod, n := n + 1, is_ready)))
    return out


def pod_writes(p: Plan) -> list[tuple[str, str]]:
    return [(c.verb, c.name) for c in p.changes if c.kind == "Pod"]


def test_each_shard_runs_one_pod_per_replica_with_its_label_spread_over_nodes() -> None:
    f = feed(["A-X", "B-X", "C-X"], replicas=3)
    p = plan(f, UID, {}, [], CONFIG)
    pods = [c.body for c in p.changes if c.kind == "Pod" and c.body]
    assert len(pods) == 6  # 2 shards x 3 replicas
    for pod in pods:
        labels = pod["metadata"]["labels"]
        assert (
            pod["metadata"]["name"]
            == f"df-{labels['svoe.io/shard']}-r{labels['svoe.io/replica']}-" + (labels["svoe.io/revision"])
        )
        spread = {c["topologyKey"]: c for c in pod["spec"]["topologySpreadConstraints"]}
        assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
        assert (
            spread["kubernetes.io/hostname"]["labelSelector"]["matchLabels"]["svoe.io/shard"]
            == (labels["svoe.io/shard"])
        )
        env = {e["name"]: e for e in pod["spec"]["containers"][1]["env"]}
        assert env["POD_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    assert {p["metadata"]["labels"]["svoe.io/replica"] for p in pods} == {"0", "1", "2"}
    # The replicas of a shard run one spec (one revision, one configmap).
    assert len({p["metadata"]["labels"]["svoe.io/revision"] for p in pods}) == 2
    assert len([c for c in p.changes if c.kind == "ConfigMap"]) == 2


def test_scaling_adds_or_removes_replicas_and_restarts_nothing() -> None:
    one, two = feed(["A-X"], replicas=1), feed(["A-X"], replicas=2)
    assert render_shard(one, UID, 0, ["A-X"], CONFIG).revision == render_shard(two, UID, 0, ["A-X"], CONFIG).revision
    status = build_status(plan(one, UID, {}, [], CONFIG), {}, 1)
    up = plan(two, UID, status, children(one, {0: ["A-X"]}), CONFIG)
    assert pod_writes(up) == [("create", render_shard(two, UID, 0, ["A-X"], CONFIG).pod_names()[1])]
    down = plan(one, UID, status, children(two, {0: ["A-X"]}), CONFIG)
    assert pod_writes(down) == [("delete", render_shard(two, UID, 0, ["A-X"], CONFIG).pod_names()[1])]


def test_rollout_replaces_one_replica_at_a_time_after_its_new_pod_is_ready() -> None:
    old, new = feed(["A-X", "B-X"]), feed(["A-X", "B-X"], book={"depth": 5}, channels=["trades", "l2_book"])
    old_pods = render_shard(old, UID, 0, ["A-X", "B-X"], CONFIG).pod_names()
    new_shard = render_shard(new, UID, 0, ["A-X", "B-X"], CONFIG)
    new_pods = new_shard.pod_names()
    observed = children(old, {0: ["A-X", "B-X"]})
    status = build_status(plan(old, UID, {}, observed, CONFIG), {}, 1)

    p = plan(new, UID, status, observed, CONFIG)
    assert pod_writes(p) == [("create", new_pods[0])], "replica 1 waits"
    st = build_status(p, status, 2)
    assert st["shards"][0]["phase"] == "RollingOut"
    assert [r["phase"] for r in st["shards"][0]["replicas"]] == ["RollingOut", "RollingOut"]
    assert "waits for replica 0" in st["shards"][0]["replicas"][1]["message"]

    cm = observe(stored(new_shard.configmap, 50))
    starting = [*observed, cm, observe(stored(new_shard.pods[0], 51))]
    assert pod_writes(plan(new, UID, st, starting, CONFIG)) == [], "nothing goes before the new pod is Ready"
    ready0 = [*observed, cm, observe(stored(new_shard.pods[0], 51, True))]
    assert pod_writes(plan(new, UID, st, ready0, CONFIG)) == [("delete", old_pods[0])]

    # Replica 0 done (its old pod gone): replica 1 rolls.
    done0 = [o for o in ready0 if o.name != old_pods[0]]
    p = plan(new, UID, st, done0, CONFIG)
    assert pod_writes(p) == [("create", new_pods[1])]
    ready1 = [*done0, observe(stored(new_shard.pods[1], 52, True))]
    p = plan(new, UID, st, ready1, CONFIG)
    assert pod_writes(p) == [("delete", old_pods[1])]
    assert [n.reason for n in p.notices] == ["RolloutComplete"]


def test_single_replica_keeps_make_before_break() -> None:
    old, new = feed(["A-X"], replicas=1), feed(["A-X"], replicas=1, book={"depth": 5})
    observed = children(old, {0: ["A-X"]})
    new_shard = render_shard(new, UID, 0, ["A-X"], CONFIG)
    p = plan(new, UID, {}, observed, CONFIG)
    assert pod_writes(p) == [("create", new_shard.pod_name)]
    with_new = [*observed, observe(stored(new_shard.configmap, 40)), observe(stored(new_shard.pod, 41, True))]
    assert pod_writes(plan(new, UID, {}, with_new, CONFIG)) == [
        ("delete", render_shard(old, UID, 0, ["A-X"], CONFIG).pod_name)
    ]


def test_a_moved_symbol_keeps_its_old_collector_until_its_new_shard_collects_it() -> None:
    # {0: A B, 1: C D}; removing A makes room in shard 0, and D moves... by the spec: the
    # assignment keeps symbols where they are, so we move one by hand through the status.
    old = feed(["A-X", "B-X", "C-X"], replicas=1)
    observed = children(old, {0: ["A-X", "B-X"], 1: ["C-X"]})
    # The recorded assignment moves B-X to shard 1 (as an operator upgrade re-balancing would).
    status = {"shards": [{"index": 0, "symbols": ["A-X"]}, {"index": 1, "symbols": ["B-X", "C-X"]}]}
    p = plan(old, UID, status, observed, CONFIG)
    s0 = render_shard(old, UID, 0, ["A-X"], CONFIG)
    s1 = render_shard(old, UID, 1, ["B-X", "C-X"], CONFIG)
    assert sorted(pod_writes(p)) == sorted([("create", s0.pod_name), ("create", s1.pod_name)])
    # Shard 0's new pod (A only) is Ready; shard 1's (B, C) is not: the old shard 0 pod, the only
    # collector of B, stays.
    both = [*observed, *(observe(stored(o, 60 + i)) for i, o in enumerate((s0.configmap, s1.configmap)))]
    half = [*both, observe(stored(s0.pod, 70, True)), observe(stored(s1.pod, 71))]
    p = plan(old, UID, status, half, CONFIG)
    assert pod_writes(p) == []
    st = build_status(p, status, 1)
    assert "B-X" in st["shards"][0]["replicas"][0]["message"]
    full = [*both, observe(stored(s0.pod, 70, True)), observe(stored(s1.pod, 71, True))]
    old0, old1 = (render_shard(old, UID, i, g, CONFIG).pod_name for i, g in ((0, ["A-X", "B-X"]), (1, ["C-X"])))
    assert sorted(pod_writes(plan(old, UID, status, full, CONFIG))) == sorted([("delete", old0), ("delete", old1)])


def test_a_replica_down_is_degraded_but_ready_and_all_down_is_not_ready() -> None:
    f = feed(["A-X"])
    names = render_shard(f, UID, 0, ["A-X"], CONFIG).pod_names()
    up = build_status(plan(f, UID, {}, children(f, {0: ["A-X"]}), CONFIG), {}, 1)
    assert condition(up, "Ready")["status"] == "True"  # type: ignore[index]
    assert up["readyReplicas"] == up["replicas"] == 2

    one_down = children(f, {0: ["A-X"]}, ready={names[0]: True})
    st = build_status(plan(f, UID, up, one_down, CONFIG), up, 1)
    assert condition(st, "Ready")["status"] == "True", "the other replica covers the shard"  # type: ignore[index]
    degraded = condition(st, "Degraded")
    assert degraded is not None and degraded["status"] == "True" and degraded["reason"] == "ReplicaDown"
    assert "replica 1" in degraded["message"] and "covered" in degraded["message"]
    # And on every later pass while it stays down (the recorded phase is NotReady now, not Ready).
    again = build_status(plan(f, UID, st, one_down, CONFIG), st, 1)
    assert condition(again, "Degraded")["reason"] == "ReplicaDown"  # type: ignore[index]
    assert again["shards"][0]["replicas"][1]["phase"] == "NotReady"

    all_down = build_status(plan(f, UID, st, children(f, {0: ["A-X"]}, ready=False), CONFIG), up, 1)
    assert condition(all_down, "Ready")["status"] == "False"  # type: ignore[index]
    assert condition(all_down, "Degraded")["reason"] == "ShardLost"  # type: ignore[index]


def test_an_unschedulable_replica_is_reported_and_left_alone() -> None:
    f = feed(["A-X"], placement={"nodeSelector": {"pool": "nowhere"}})
    observed = children(f, {0: ["A-X"]}, ready=False)
    message = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    pods = []
    for o in observed:
        if o.kind == "Pod":
            o = Observed(**{**o.__dict__, "unschedulable": message})
        pods.append(o)
    p = plan(f, UID, {}, pods, CONFIG)
    assert pod_writes(p) == [], "no delete and recreate: a storm would not find a node either"
    st = build_status(p, {}, 1)
    degraded = condition(st, "Degraded")
    assert degraded is not None and degraded["reason"] == "Unschedulable" and message in degraded["message"]
    assert st["shards"][0]["phase"] == "Unschedulable"
    assert condition(st, "Ready")["status"] == "False"  # type: ignore[index]


def test_replicas_out_of_range_are_refused_with_the_field_named() -> None:
    for bad in (0, 6):
        try:
            feed(["A-X"], replicas=bad)
        except ManifestError as e:
            assert "replicas" in str(e)
        else:
            raise AssertionError(f"replicas {bad} accepted")


def test_health_figures_merge_over_replicas_and_a_silent_shard_is_stale() -> None:
    f = feed(["A-X", "B-X", "C-X"])  # shards {0: A B, 1: C}
    observed = children(f, {0: ["A-X", "B-X"], 1: ["C-X"]})
    p = plan(f, UID, {}, observed, CONFIG)
    s0, s1 = (render_shard(f, UID, i, g, CONFIG).pod_names() for i, g in ((0, ["A-X", "B-X"]), (1, ["C-X"])))
    now = "2026-12-02T10:00:00Z"
    fresh, old = "2026-12-02T09:59:58.000Z", "2026-12-02T09:50:00.000Z"

    def stats(t: str, rate: float, gaps: int, backlog: int) -> Any:
        doc = {"lastEventTime": t, "eventsPerSecond": rate, "gapsLastHour": gaps, "backlog": backlog}
        return parse_stats(doc, 0.0)

    health = {
        s0[0]: stats(fresh, 100.0, 2, 10),
        s0[1]: stats("2026-12-02T09:59:50.000Z", 90.0, 0, 30),
        s1[0]: stats(old, 0.0, 0, 0),
    }
    st = build_status(p, {}, 1, health=health, stale_after=120, now=now)
    sh0, sh1 = st["shards"]
    assert (sh0["eventsPerSecond"], sh0["lastEventTime"], sh0["gapsLastHour"], sh0["backlog"]) == (100.0, fresh, 0, 30)
    assert sh0["replicas"][1]["eventsPerSecond"] == 90.0
    assert "eventsPerSecond" not in sh1["replicas"][1], "replica 1 of shard 1 was not read"
    assert st["eventsPerSecond"] == 100.0 and st["lastEventTime"] == old and st["gapsLastHour"] == 0
    stale = condition(st, "Stale")
    assert stale is not None and stale["status"] == "True" and "shard 1" in stale["message"], stale
    # Without health read, Stale is Unknown; with every shard fresh, False.
    assert condition(build_status(p, {}, 1), "Stale")["status"] == "Unknown"  # type: ignore[index]
    health[s1[0]] = stats(fresh, 5.0, 0, 0)
    assert condition(build_status(p, {}, 1, health=health, now=now), "Stale")["status"] == "False"  # type: ignore[index]


def test_a_failing_new_pod_keeps_the_rollout_going_and_the_datafeed_not_ready() -> None:
    # The new revision adds C-X; its pod crashes. The old pod still serves A-X, but nobody collects
    # C-X: not Ready, still rolling out, Degraded with the failure.
    old, new = feed(["A-X"], replicas=1), feed(["A-X", "C-X"], replicas=1)
    observed = children(old, {0: ["A-X"]})
    status = build_status(plan(old, UID, {}, observed, CONFIG), {}, 1)
    new_shard = render_shard(new, UID, 0, ["A-X", "C-X"], CONFIG)
    crashing = stored(new_shard.pod, 30)
    crashing["status"] = {
        "phase": "Running",
        "containerStatuses": [{"name": "collector", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
    }
    with_new = [*observed, observe(stored(new_shard.configmap, 29)), observe(crashing)]
    p = plan(new, UID, status, with_new, CONFIG)
    assert pod_writes(p) == [], "the old pod stays; the crashing one is the kubelet's to restart"
    st = build_status(p, status, 2)
    assert st["shards"][0]["phase"] == "RollingOut"
    assert condition(st, "Ready")["status"] == "False"  # type: ignore[index]
    degraded = condition(st, "Degraded")
    assert degraded is not None and degraded["status"] == "True" and "CrashLoopBackOff" in degraded["message"]


def test_a_current_pod_with_edited_labels_is_relabelled_not_deleted() -> None:
    f = feed(["A-X"])
    names = render_shard(f, UID, 0, ["A-X"], CONFIG).pod_names()
    observed = children(f, {0: ["A-X"]})
    edited = []
    for o in observed:
        if o.name == names[1]:  # replica 1 lost its shard and replica labels
            labels = {k: v for k, v in o.labels.items() if k not in ("svoe.io/shard", "svoe.io/replica")}
            o = Observed(**{**o.__dict__, "labels": labels})
        edited.append(o)
    p = plan(f, UID, {}, edited, CONFIG)
    assert pod_writes(p) == [("patch", names[1])]


def test_a_namesake_stuck_terminating_past_its_grace_period_is_removed() -> None:
    # Its node is gone: the kubelet never confirms the deletion, and the replica could never be
    # recreated under its name.
    f = feed(["A-X"])
    names = render_shard(f, UID, 0, ["A-X"], CONFIG).pod_names()
    now = 1_800_000_000.0

    def terminating(since: float) -> list[Observed]:
        stamp = datetime.datetime.fromtimestamp(now - since, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out = []
        for o in children(f, {0: ["A-X"]}, ready={names[0]: True}):
            if o.name == names[1]:
                o = Observed(**{**o.__dict__, "deleting": True, "deletion_timestamp": stamp})
            out.append(o)
        return out

    assert pod_writes(plan(f, UID, {}, terminating(since=10), CONFIG, now)) == [], "still within the margin"
    p = plan(f, UID, {}, terminating(since=600), CONFIG, now)
    (force,) = [c for c in p.changes if c.kind == "Pod"]
    assert (force.verb, force.name, force.grace_seconds) == ("delete", names[1], 0)
    assert force.uid is not None and force.notice is not None and force.notice.reason == "ForceDeletedPod"
