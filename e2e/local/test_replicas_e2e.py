"""End to end: two replicas of a shard, and one of them loses its node mid-stream.

Scenario 3, against a fresh replay that starts streaming once both replicas have connected (each
replica's cryptofeed opens two connections), so both collect from the first message:
- a DataFeed of 2 symbols, one shard, `replicas: 2`, flushing every 2 s;
- the status and `kubectl get df` show the pods' health (rate, last event) as it runs;
- a third into the capture, the pod runner loses replica 1's node: every process SIGKILLed, its
  data directories (Redis' AOF with the unflushed entries) deleted, the pod reported Failed,
  NodeLost. The operator replaces it; the DataFeed stays Ready (replica 0 covers the shard) and is
  Degraded (ReplicaDown) until the replacement is Ready;
- when the capture is sent, the DataFeed is deleted.

Then the exactly-once view holds the reference counts (the lost replica's flushed blocks are
merged away; the replacement, which joined mid-stream, adds one book snapshot of its own per
symbol), and `svoe lake gaps` shows no gap: replica 0 collected through the loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from e2e.local.harness import (
    BUCKET,
    NAMESPACE,
    ONE_TO_ONE,
    Counts,
    Exchange,
    Kubectl,
    MotoServer,
    capture_symbols,
    collected,
    datafeed,
    is_ready,
    lake_counts,
    of_symbols,
    stream_names,
    svoe_json,
    view_snapshots,
)
from e2e.local.pod_runner import PodRunner, PodSandbox, describe
from e2e.local.steps import READY_TIMEOUT, delete_and_wait, feed_pods, wait_collected, wait_ready
from svoe.testing.kube import KubeEmulator
from svoe.testing.operator import OperatorProcess
from svoe.testing.waiting import wait_for
from tests.operator.conftest import DATAFEEDS
from tests.operator.conftest import condition as condition_of

NAME = "replicas"


@dataclass
class ReplicaRun:
    symbols: list[str]
    survivor: PodSandbox
    lost: PodSandbox
    replacement: PodSandbox
    health_row: dict[str, str]  # `kubectl get df` while both replicas ran
    health_table: str
    health_status: dict[str, Any]
    statuses: list[dict[str, Any]]  # every status the API stored, in order
    started_at: float
    lost_at: float
    deleted_at: float
    lake: Counts
    raw: Counts
    snapshots: dict[str, int]
    gaps: list[dict[str, Any]]
    exchange: dict[str, Any]  # the replay's stats at the end
    survivor_counts: Counts  # what replica 0's collector counted


@pytest.fixture(scope="module")
def replica_run(
    kube: KubeEmulator,
    kubectl: Kubectl,
    operator: OperatorProcess,
    runner: PodRunner,
    moto: MotoServer,
    exchanges: Any,
) -> ReplicaRun:
    ex: Exchange = exchanges(1.0, clients=4)
    _, all_symbols = capture_symbols()
    symbols = all_symbols[:2]
    url = f"s3://{BUCKET}/{NAME}"
    started_at = time.time()
    doc = datafeed(NAME, symbols, ex, url, flushIntervalSeconds=2.0)
    doc["spec"]["replicas"] = 2
    assert f"datafeed.svoe.io/{NAME} created" in kubectl.apply(doc)
    wait_ready(kube, kubectl, NAME, shards=1, replicas=2)
    by_replica = {p["metadata"]["labels"]["svoe.io/replica"]: p["metadata"]["name"] for p in feed_pods(kube, NAME)}
    survivor, lost = runner.by_name(by_replica["0"]), runner.by_name(by_replica["1"])

    def healthy() -> tuple[dict[str, str], dict[str, Any]] | None:
        st = kube.get(DATAFEEDS, NAMESPACE, NAME).get("status") or {}
        reps = st.get("shards", [{}])[0].get("replicas", [])
        if len(reps) == 2 and all(r.get("eventsPerSecond") and r.get("lastEventTime") for r in reps):
            row = kubectl.get_df()[NAME]
            return (row, st) if row.get("RATE") not in ("", "<none>") else None
        return None

    health_row, health_status = wait_for(healthy, 60, "the replicas' health in the status and kubectl")
    health_table = kubectl("get", "df", "-o", "wide").stdout
    wait_for(lambda: ex.stats()["sent"] >= ex.total // 3, 60, "a third of the capture to be sent")
    lost_at = time.time()
    runner.lose_node(lost)

    def replacement() -> PodSandbox | None:
        fresh = [sb for sb in runner.pods(by_replica["1"]) if sb.uid != lost.uid]
        pods = [p for p in feed_pods(kube, NAME) if p["metadata"]["uid"] in {sb.uid for sb in fresh}]
        return fresh[0] if pods and is_ready(pods[0]) else None

    new = wait_for(replacement, READY_TIMEOUT, "the lost replica's replacement to be Ready")
    others = frozenset(n for s in all_symbols if s not in symbols for n in stream_names(s).values())
    wait_collected(ex, [survivor, new], held_ok=others)  # nobody subscribes to the other symbols
    deleted_at = time.time()
    delete_and_wait(kube, kubectl, runner, NAME)
    statuses = [
        obj.get("status") or {}
        for _, _, obj in kube.timeline(DATAFEEDS)
        if obj["metadata"]["name"] == NAME and obj["metadata"].get("namespace") == NAMESPACE
    ]
    return ReplicaRun(
        symbols=symbols,
        survivor=survivor,
        lost=lost,
        replacement=new,
        health_row=health_row,
        health_table=health_table,
        health_status=health_status,
        statuses=statuses,
        started_at=started_at,
        lost_at=lost_at,
        deleted_at=deleted_at,
        lake=lake_counts(url, moto.env),
        raw=lake_counts(url, moto.env, raw=True),
        snapshots=view_snapshots(url, moto.env),
        gaps=svoe_json("lake", "gaps", url, "--start", str(started_at), "--end", str(deleted_at), env=moto.env),
        exchange=ex.stats(),
        survivor_counts=collected(survivor),
    )


def test_each_replica_ran_on_its_own_pod_and_writer(replica_run: ReplicaRun) -> None:
    r = replica_run
    assert r.survivor.name != r.lost.name and r.replacement.name == r.lost.name
    assert r.replacement.uid != r.lost.uid, "the replacement is a new pod (and so a new writer)"
    assert r.survivor.deleted and not r.survivor.failures, describe(r.survivor)


def test_the_status_and_kubectl_show_the_pods_health(replica_run: ReplicaRun) -> None:
    r = replica_run
    assert float(r.health_row["RATE"]) > 0, r.health_row
    assert "REPLICAS" in r.health_table.splitlines()[0], r.health_table
    print(r.health_table)  # shown with -s; the README's example
    assert r.health_row["LAST EVENT"] not in ("", "<none>") and r.health_row["GAPS"] == "0", r.health_row
    st = r.health_status
    assert st["eventsPerSecond"] > 0 and st["gapsLastHour"] == 0 and isinstance(st["backlog"], int)
    assert condition_of({"status": st}, "Stale")["status"] == "False"  # type: ignore[index]


def test_a_lost_replica_degrades_but_never_unreadies_the_datafeed(replica_run: ReplicaRun) -> None:
    def cond(st: dict[str, Any], type_: str) -> dict[str, Any]:
        return condition_of({"status": st}, type_) or {}

    down = [st for st in replica_run.statuses if cond(st, "Degraded").get("reason") == "ReplicaDown"]
    assert down, "the replica's loss never showed in the status"
    assert all(cond(st, "Ready").get("status") == "True" for st in down), "Ready flipped while replica 0 served"
    assert "covered" in cond(down[0], "Degraded")["message"]
    after = replica_run.statuses[replica_run.statuses.index(down[-1]) + 1 :]
    assert any(cond(st, "Degraded").get("status") == "False" for st in after), "Degraded never cleared"


def test_the_view_is_exact_through_the_loss(replica_run: ReplicaRun) -> None:
    r = replica_run
    # The lost replica flushed blocks before its node went: stored twice, counted once.
    assert sum(r.raw["trades"].values()) > sum(r.lake["trades"].values())
    for symbol in r.symbols:
        for channel, name in stream_names(symbol).items():
            if channel in ONE_TO_ONE:
                # One message, one event: the view holds every message the replay sent, once.
                stream = r.exchange["streams"][name]
                assert stream["remaining"] == 0 and r.lake[channel][symbol] == stream["sent"], (channel, symbol)
    # Books: the survivor's initial snapshot and updates (it ran from the first message to the
    # last), plus the snapshot the replacement fetched when it joined mid-stream.
    assert {s: r.snapshots.get(s) for s in r.symbols} == {s: 2 for s in r.symbols}
    for symbol in r.symbols:
        assert r.lake["l2_book"][symbol] == r.survivor_counts["l2_book"][symbol] + 1, symbol
    assert of_symbols(r.lake, set(r.symbols)) == r.lake


def test_no_gap_while_a_replica_covered_the_loss(replica_run: ReplicaRun) -> None:
    assert replica_run.gaps == [], replica_run.gaps
