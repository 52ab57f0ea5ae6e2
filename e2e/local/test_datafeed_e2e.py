"""End to end: a DataFeed applied with kubectl becomes running feed pods that fill the lake.

Everything is real except the cluster: the API server is the emulator, and the kubelet is the
PodRunner (test infrastructure), which runs the operator's pods as local processes with their own
commands, args and env. The exchange is the replay of `svoe replay serve` (Binance Futures, 4
symbols, every channel), which, like a real exchange, sends each connection the streams it
subscribed to. The lake is S3 on a moto server, with Glue.

Two scenarios, each against a fresh replay:

1. reference (4 symbols, 2 per pod = 2 shards): the pods become Ready, `kubectl get df` shows it,
   the whole capture is collected, then the DataFeed is deleted. The flush interval is 600s, so
   the lake is still empty when the deletion starts: every row gets there through the drain on
   SIGTERM. The lake then holds exactly the README's reference counts, and exactly what each pod's
   collector counted.

2. rollout (SUSHI, AKRO | KEEP, then KEEP is replaced by CTK while the replay runs): shard 1 gets a
   new pod next to the old one, the old one is deleted only after the new one is Ready, shard 0's
   pod is never touched.

What "exact" means in the rollout. The replay broadcasts each stream to every connection
subscribed to it, and holds a stream (its position does not advance) while nobody subscribes. So:
- symbols that stayed (SUSHI, AKRO, in the shard that did not change): their pod ran throughout,
  and their lake counts equal scenario 1's per (channel, symbol), exactly;
- the symbol that came (CTK): nobody had subscribed to its streams, so the replay held them; its
  new pod received them whole, and its counts equal scenario 1's too;
- the symbol that went (KEEP): its old pod collected until it was deleted, mid-stream; what it
  collected is in the lake, all of it (equal to its collector's own final count), and for the
  channels where one message is one event, what the replay sent of it == what the lake holds,
  and that + what the replay still holds == scenario 1.
A symbol that moves from an old pod to its replacement would reach both pods during the
make-before-break overlap, and the lake's exactly-once view merges the two copies; this scenario
has none (shard 1 holds one symbol). e2e/README.md says more.
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
    first_rv,
    is_deleting,
    is_ready,
    lake_counts,
    merge,
    of_symbols,
    reference,
    stream_names,
    totals,
)
from e2e.local.pod_runner import PodRunner, PodSandbox, describe
from svoe.testing.kube import CONFIGMAPS, PODS, SERVICES, KubeEmulator
from svoe.testing.waiting import wait_for
from tests.operator.conftest import OperatorProcess

FLUSH_SECONDS = 600.0  # nothing is flushed on time: every row reaches the lake through a drain
READY_TIMEOUT = 120.0  # a loaded 2-core CI machine has taken over 60 s to get a rollout's pods Ready
DRAIN_TIMEOUT = 90.0


def feed_pods(kube: KubeEmulator, name: str) -> list[dict[str, Any]]:
    return kube.list(PODS, NAMESPACE, f"svoe.io/datafeed={name}")


def wait_ready(kube: KubeEmulator, kubectl: Kubectl, name: str, shards: int) -> dict[str, str]:
    """Until `shards` pods of the DataFeed are Ready and `kubectl get df` says READY True."""
    wait_for(
        lambda: len([p for p in feed_pods(kube, name) if is_ready(p) and not is_deleting(p)]) == shards,
        READY_TIMEOUT,
        f"{shards} Ready pods of {name}",
    )

    def ready_row() -> dict[str, str] | None:
        row = kubectl.get_df().get(name)
        return row if row is not None and row.get("READY") == "True" else None

    return wait_for(ready_row, READY_TIMEOUT, f"kubectl get df to show {name} READY True")


def wait_collected(ex: Exchange, pods: list[PodSandbox], held_ok: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Until the replay has sent every stream but `held_ok` to its end, and the collectors' counts
    have stopped moving (they have handled what they received)."""

    def all_sent() -> dict[str, Any] | None:
        s = ex.stats()
        return s if all(st["done"] or name in held_ok for name, st in s["streams"].items()) else None

    stats = wait_for(all_sent, 120, "the whole capture to be sent")
    last: list[Counts] = []
    quiet_since = time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = [collected(p) for p in pods]
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= 1.5:
            return stats
        time.sleep(0.25)
    raise TimeoutError("the collectors' counts kept changing")


def delete_and_wait(kube: KubeEmulator, kubectl: Kubectl, runner: PodRunner, name: str) -> float:
    """`kubectl delete df NAME`; then until every pod's processes have exited and the pods are gone."""
    started = time.monotonic()
    out = kubectl("delete", "df", name).stdout
    assert f'datafeed.svoe.io "{name}" deleted' in out, out
    wait_for(
        lambda: not feed_pods(kube, name) and all(sb.deleted for sb in runner.pods(f"{name}-")),
        DRAIN_TIMEOUT,
        f"the pods of {name} to drain and go",
    )
    return started


# -- scenario 1: reference -------------------------------------------------------------------------


@dataclass
class ReferenceRun:
    name: str
    lake_url: str
    df_row: dict[str, str]
    lake_before_delete: Counts
    lake: Counts
    pods: list[PodSandbox]
    exchange: dict[str, Any]  # the replay's stats at the end
    deleted_at: float


@pytest.fixture(scope="module")
def reference_run(
    kube: KubeEmulator,
    kubectl: Kubectl,
    operator: OperatorProcess,
    runner: PodRunner,
    moto: MotoServer,
    exchanges: Any,
) -> ReferenceRun:
    ex: Exchange = exchanges(4.0)
    _, symbols = capture_symbols()
    name, url = "futures", f"s3://{BUCKET}/reference"
    doc = datafeed(name, symbols, ex, url, glueDatabase="svoe_e2e", flushIntervalSeconds=FLUSH_SECONDS)
    assert "datafeed.svoe.io/futures created" in kubectl.apply(doc)
    row = wait_ready(kube, kubectl, name, shards=2)
    pods = runner.pods(f"{name}-")
    wait_collected(ex, pods)
    before = lake_counts(url, moto.env)
    deleted_at = delete_and_wait(kube, kubectl, runner, name)
    return ReferenceRun(name, url, row, before, lake_counts(url, moto.env), pods, ex.stats(), deleted_at)


def test_kubectl_get_df_shows_ready(reference_run: ReferenceRun) -> None:
    row = reference_run.df_row
    assert row["READY"] == "True"
    assert (row["EXCHANGE"], row["SYMBOLS"], row["SHARDS"]) == ("BINANCE_FUTURES", "4", "2")


def test_lake_counts_equal_the_reference_counts(reference_run: ReferenceRun) -> None:
    assert totals(reference_run.lake) == reference()
    _, symbols = capture_symbols()
    assert {s for syms in reference_run.lake.values() for s in syms} == set(symbols)


def test_each_pod_collects_its_own_shard(kube: KubeEmulator, reference_run: ReferenceRun) -> None:
    assert len(reference_run.pods) == 2
    seen: set[str] = set()
    for sb in reference_run.pods:
        created = next(obj for _, typ, obj in kube.timeline(PODS) if obj["metadata"]["uid"] == sb.uid)
        shard_symbols = set(created["metadata"]["annotations"]["svoe.io/symbols"].split(","))
        got = {s for syms in collected(sb).values() for s in syms}
        assert got == shard_symbols, describe(sb)
        seen |= got
    assert len(seen) == 4


def test_delete_drains_every_pod_and_loses_nothing(reference_run: ReferenceRun) -> None:
    # The lake was empty when the deletion started: the drain on SIGTERM wrote every row.
    assert reference_run.lake_before_delete == {}
    assert reference_run.lake == merge([collected(sb) for sb in reference_run.pods])
    for sb in reference_run.pods:
        assert of_symbols(reference_run.lake, set(sb_symbols(sb))) == collected(sb), describe(sb)


def test_delete_stops_every_process_as_a_kubelet_would(kube: KubeEmulator, reference_run: ReferenceRun) -> None:
    for sb in reference_run.pods:
        c = sb.containers
        assert sb.deleted and not sb.failures, describe(sb)
        assert {n: r.exit_code for n, r in c.items()} == {"redis": 0, "collector": 0, "aggregator": 0}, describe(sb)
        assert not any(r.killed for r in c.values()), describe(sb)
        collector, aggregator, redis = c["collector"], c["aggregator"], c["redis"]
        assert collector.term_sent_at and aggregator.term_sent_at and redis.term_sent_at, describe(sb)
        # Redis' preStop hook kept it up until the aggregator had drained and stopped serving.
        assert aggregator.served_until is not None and redis.term_sent_at >= aggregator.served_until, describe(sb)
        assert collector.exited_at is not None and redis.term_sent_at > collector.exited_at, describe(sb)
        for line in aggregator.log().splitlines():
            assert "redis error" not in line and "unflushed" not in line, line  # the drain completed
        # The API saw the graceful deletion first, then the pod's removal.
        events = [(typ, is_deleting(obj)) for _, typ, obj in kube.timeline(PODS) if obj["metadata"]["uid"] == sb.uid]
        assert ("MODIFIED", True) in events and events[-1][0] == "DELETED", events
    for key in (PODS, CONFIGMAPS, SERVICES):
        assert not kube.list(key, NAMESPACE, f"svoe.io/datafeed={reference_run.name}")


def test_the_lake_is_registered_in_glue(moto: MotoServer, reference_run: ReferenceRun) -> None:
    glue = moto.client("glue")
    tables = {t["Name"] for t in glue.get_tables(DatabaseName="svoe_e2e")["TableList"]}
    assert tables == {*reference(), "feed_events"}  # market data, and the feeds' own events
    for table in tables - {"feed_events"}:
        parts = glue.get_partitions(DatabaseName="svoe_e2e", TableName=table)["Partitions"]
        assert {p["Values"][1] for p in parts} == set(reference_run.lake[table]), table


def sb_symbols(sb: PodSandbox) -> list[str]:
    return sorted({s for syms in collected(sb).values() for s in syms})


# -- scenario 2: rollout ---------------------------------------------------------------------------


@dataclass
class RolloutRun:
    stayed: list[str]
    removed: str
    added: str
    stable: PodSandbox  # shard 0, never touched
    old: PodSandbox  # shard 1 before the edit
    new: PodSandbox  # shard 1 after the edit
    sent_at_edit: int  # messages the replay had sent when the DataFeed was edited
    total: int
    df_row: dict[str, str]
    rv_new_ready: int | None
    rv_old_deleting: int | None
    lake_before_delete: Counts
    lake: Counts
    exchange: dict[str, Any]  # the replay's stats at the end
    deleted_at: float
    pods_seen: list[str]


@pytest.fixture(scope="module")
def rollout_run(
    kube: KubeEmulator,
    kubectl: Kubectl,
    operator: OperatorProcess,
    runner: PodRunner,
    moto: MotoServer,
    exchanges: Any,
    reference_run: ReferenceRun,
) -> RolloutRun:
    ex: Exchange = exchanges(1.2)  # the capture lasts 25s: room for a rollout mid-stream
    _, symbols = capture_symbols()
    stayed, removed, added = symbols[:2], symbols[2], symbols[3]
    name, url = "rollout", f"s3://{BUCKET}/rollout"
    doc = datafeed(name, [*stayed, removed], ex, url, flushIntervalSeconds=FLUSH_SECONDS)
    assert "datafeed.svoe.io/rollout created" in kubectl.apply(doc)
    wait_ready(kube, kubectl, name, shards=2)
    by_shard = {p["metadata"]["labels"]["svoe.io/shard"]: p["metadata"]["name"] for p in feed_pods(kube, name)}
    stable, old = runner.by_name(by_shard["0"]), runner.by_name(by_shard["1"])
    # Let the old pod collect a good part of its symbol's streams before it is replaced.
    wait_for(lambda: ex.stats()["sent"] >= ex.total // 4, 60, "a quarter of the capture to be sent")

    sent_at_edit = ex.stats()["sent"]
    doc["spec"]["symbols"] = [*stayed, added]
    assert "datafeed.svoe.io/rollout configured" in kubectl.apply(doc)

    def new_pod() -> str | None:
        names = [p["metadata"]["name"] for p in feed_pods(kube, name)]
        return next((n for n in names if n not in by_shard.values()), None)

    new_name = wait_for(new_pod, READY_TIMEOUT, "the new pod of shard 1")
    wait_for(lambda: old.deleted, READY_TIMEOUT + DRAIN_TIMEOUT, "the old pod of shard 1 to be replaced")
    row = wait_ready(kube, kubectl, name, shards=2)
    new = runner.by_name(new_name)
    removed_streams = frozenset(stream_names(removed).values())
    wait_collected(ex, [stable, new], held_ok=removed_streams)
    before = lake_counts(url, moto.env)
    deleted_at = delete_and_wait(kube, kubectl, runner, name)
    return RolloutRun(
        stayed=stayed,
        removed=removed,
        added=added,
        stable=stable,
        old=old,
        new=new,
        sent_at_edit=sent_at_edit,
        total=ex.total,
        df_row=row,
        rv_new_ready=first_rv(kube, new_name, is_ready),
        rv_old_deleting=first_rv(kube, old.name, is_deleting),
        lake_before_delete=before,
        lake=lake_counts(url, moto.env),
        exchange=ex.stats(),
        deleted_at=deleted_at,
        pods_seen=sorted(sb.name for sb in runner.pods(f"{name}-")),
    )


def test_the_edit_came_mid_stream(rollout_run: RolloutRun) -> None:
    # Otherwise nothing below says anything about a rollout under traffic.
    assert 0 < rollout_run.sent_at_edit < rollout_run.total


def test_only_the_edited_shard_rolls(kube: KubeEmulator, rollout_run: RolloutRun) -> None:
    r = rollout_run
    assert r.pods_seen == sorted([r.stable.name, r.old.name, r.new.name])
    assert r.new.name.startswith("rollout-1-") and r.old.name.startswith("rollout-1-")
    assert r.stable.name.startswith("rollout-0-")
    # Shard 0's pod ran from before the edit until the DataFeed was deleted, untouched.
    stable_terminating = r.stable.at("terminating")
    assert stable_terminating is not None and stable_terminating >= r.deleted_at, describe(r.stable)
    assert first_rv(kube, r.stable.name, is_deleting) is not None
    assert r.df_row["READY"] == "True" and (r.df_row["SYMBOLS"], r.df_row["SHARDS"]) == ("3", "2")


def test_rollout_is_make_before_break(rollout_run: RolloutRun) -> None:
    r = rollout_run
    assert r.rv_new_ready is not None and r.rv_old_deleting is not None
    assert r.rv_new_ready < r.rv_old_deleting, "the old pod was deleted before its replacement was Ready"
    new_ready, old_stopping = r.new.at("ready"), r.old.at("terminating")
    assert new_ready is not None and old_stopping is not None and new_ready < old_stopping
    assert {n: c.exit_code for n, c in r.old.containers.items()} == {"redis": 0, "collector": 0, "aggregator": 0}


def test_counts_stay_exact_for_the_symbols_that_stayed(rollout_run: RolloutRun, reference_run: ReferenceRun) -> None:
    r = rollout_run
    stayed = of_symbols(r.lake, set(r.stayed))
    assert stayed == of_symbols(reference_run.lake, set(r.stayed))
    assert stayed == collected(r.stable)


def test_the_added_symbol_is_complete(rollout_run: RolloutRun, reference_run: ReferenceRun) -> None:
    r = rollout_run
    assert of_symbols(r.lake, {r.added}) == of_symbols(reference_run.lake, {r.added}) == collected(r.new)


def test_the_replaced_pod_drained_what_it_collected(rollout_run: RolloutRun, reference_run: ReferenceRun) -> None:
    r = rollout_run
    got = of_symbols(r.lake, {r.removed})
    assert got == collected(r.old), describe(r.old)
    assert sum(totals(got).values()) > 0, "the replaced pod collected nothing of its symbol"
    # The drain at the rollout wrote it: before the DataFeed's deletion it was already in the lake.
    assert of_symbols(r.lake_before_delete, {r.removed}) == got
    names = stream_names(r.removed)
    streams = r.exchange["streams"]
    held = {ch: streams[names[ch]]["remaining"] for ch in ONE_TO_ONE}
    assert sum(held.values()) > 0, "the symbol was removed after its streams had ended"
    assert all(streams[names[ch]]["held"] for ch in ONE_TO_ONE), "nobody subscribes to it any more"
    for ch in ONE_TO_ONE:
        sent = streams[names[ch]]["sent"]  # to the old pod alone: nobody else subscribed to it
        assert got.get(ch, {}).get(r.removed, 0) == sent, ch
        assert sent + held[ch] == reference_run.lake[ch][r.removed], ch


def test_no_container_exited_on_its_own(
    runner: PodRunner, reference_run: ReferenceRun, rollout_run: RolloutRun
) -> None:
    # Containers stop only when their pod is deleted (the runner does not restart them).
    assert runner.failures() == []
    assert all(sb.deleted for sb in runner.pods()), [describe(sb) for sb in runner.pods() if not sb.deleted]
