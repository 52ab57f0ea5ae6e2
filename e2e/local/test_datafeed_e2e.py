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

2. rollout ({0: S0 S1, 1: S2}; a quarter into the capture the symbols become S0, S1, S3 with one
   symbol per pod, so {0: S0, 1: S1, 2: S3}): S0 stays (its shard rolls), S1 moves from shard 0
   to shard 1, S2 goes, S3 comes. Every changed shard gets its new pod next to the old one, and
   an old pod goes only when its replacement is Ready and every symbol it collected has a Ready
   collector again: shard 0's old pod waits for shard 1's new pod, S1's new home.

What "exact" means in the rollout. The replay broadcasts each stream to every connection
subscribed to it, and holds a stream (its position does not advance) while nobody subscribes. An
old pod and its replacement both receive a symbol during the overlap, and the lake's exactly-once
view merges the copies. So, for S0, S1 and S3, the view holds scenario 1's counts per (channel,
symbol) exactly, but for one thing: a collector that joins a book mid-stream stores its own
snapshot first (docs/lake-schema.md), one more l2_book row each for S0 and S1. S2's old pod
collected until it was deleted, mid-stream: the lake holds exactly what it collected, and what the
replay sent of it + what the replay still holds == scenario 1, channel by channel.
"""

from __future__ import annotations

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
    view_snapshots,
)
from e2e.local.pod_runner import PodRunner, PodSandbox, describe
from e2e.local.steps import (
    DRAIN_TIMEOUT,
    FLUSH_SECONDS,
    READY_TIMEOUT,
    delete_and_wait,
    feed_pods,
    pods_by_shard,
    wait_collected,
    wait_ready,
)
from svoe.testing.kube import CONFIGMAPS, PODS, SERVICES, KubeEmulator
from svoe.testing.operator import OperatorProcess
from svoe.testing.waiting import wait_for

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
    stayed: str  # S0: listed before and after; its shard rolls (it loses S1)
    moved: str  # S1: shard 0 -> shard 1
    removed: str  # S2: shard 1's only symbol before
    added: str  # S3: shard 2 after
    old: dict[int, PodSandbox]  # shard -> its pod before the edit
    new: dict[int, PodSandbox]  # shard -> its pod after the edit
    sent_at_edit: int  # messages the replay had sent when the DataFeed was edited
    total: int
    df_row: dict[str, str]
    rv_ready: dict[str, int | None]  # pod -> resourceVersion at which the API first showed it Ready
    rv_deleting: dict[str, int | None]  # pod -> ... first showed its deletionTimestamp
    lake: Counts
    snapshots: dict[str, int]  # symbol -> l2_book snapshot rows in the exactly-once view
    exchange: dict[str, Any]  # the replay's stats at the end
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
    # The capture lasts about 37 s: room for a rollout mid-stream even when new pods take 16 s to
    # be ready (a contended 2-core machine). At 25 s the old pods got every stream to its end.
    ex: Exchange = exchanges(0.8)
    _, (s0, s1, s2, s3) = capture_symbols()
    name, url = "rollout", f"s3://{BUCKET}/rollout"
    doc = datafeed(name, [s0, s1, s2], ex, url, flushIntervalSeconds=FLUSH_SECONDS)  # {0: S0 S1, 1: S2}
    assert "datafeed.svoe.io/rollout created" in kubectl.apply(doc)
    wait_ready(kube, kubectl, name, shards=2)
    old = {
        int(p["metadata"]["labels"]["svoe.io/shard"]): runner.by_name(p["metadata"]["name"])
        for p in feed_pods(kube, name)
    }
    # Let the old pods collect a good part of the streams before they are replaced.
    wait_for(lambda: ex.stats()["sent"] >= ex.total // 4, 60, "a quarter of the capture to be sent")

    sent_at_edit = ex.stats()["sent"]
    # One symbol per pod now: S0 stays in shard 0, S1 overflows to shard 1 (whose S2 is gone),
    # S3 comes into shard 2. Every shard rolls; S1 moves.
    doc["spec"]["symbols"] = [s0, s1, s3]
    doc["spec"]["sharding"]["maxSymbolsPerPod"] = 1
    assert "datafeed.svoe.io/rollout configured" in kubectl.apply(doc)
    wait_for(lambda: all(sb.deleted for sb in old.values()), 2 * READY_TIMEOUT + DRAIN_TIMEOUT, "the old pods to go")
    row = wait_ready(kube, kubectl, name, shards=3)
    new = pods_by_shard(kube, runner, name)
    wait_collected(ex, list(new.values()), held_ok=frozenset(stream_names(s2).values()))
    delete_and_wait(kube, kubectl, runner, name)
    pods = [*old.values(), *new.values()]
    return RolloutRun(
        stayed=s0,
        moved=s1,
        removed=s2,
        added=s3,
        old=old,
        new=new,
        sent_at_edit=sent_at_edit,
        total=ex.total,
        df_row=row,
        rv_ready={sb.name: first_rv(kube, sb.name, is_ready) for sb in pods},
        rv_deleting={sb.name: first_rv(kube, sb.name, is_deleting) for sb in pods},
        lake=lake_counts(url, moto.env),
        snapshots=view_snapshots(url, moto.env),
        exchange=ex.stats(),
        pods_seen=sorted(sb.name for sb in runner.pods(f"{name}-")),
    )


def test_the_edit_came_mid_stream(rollout_run: RolloutRun) -> None:
    # Otherwise nothing below says anything about a rollout under traffic.
    assert 0 < rollout_run.sent_at_edit < rollout_run.total


def test_every_changed_shard_rolls_make_before_break(rollout_run: RolloutRun) -> None:
    r = rollout_run
    assert r.pods_seen == sorted(sb.name for sb in [*r.old.values(), *r.new.values()])
    assert sorted(r.old) == [0, 1] and sorted(r.new) == [0, 1, 2]
    assert sb_symbols(r.new[0]) == [r.stayed] and sb_symbols(r.new[1]) == [r.moved]
    assert sb_symbols(r.new[2]) == [r.added]
    for shard, old in r.old.items():
        ready, deleting = r.rv_ready[r.new[shard].name], r.rv_deleting[old.name]
        assert ready is not None and deleting is not None and ready < deleting, f"shard {shard}"
        assert {n: c.exit_code for n, c in old.containers.items()} == {"redis": 0, "collector": 0, "aggregator": 0}
    assert r.df_row["READY"] == "True" and (r.df_row["SYMBOLS"], r.df_row["SHARDS"]) == ("3", "3")


def test_the_moved_symbol_keeps_its_old_pod_until_its_new_pod_is_ready(rollout_run: RolloutRun) -> None:
    r = rollout_run
    # Shard 0's old pod was the only collector of S1 until shard 1's new pod was Ready.
    ready, deleting = r.rv_ready[r.new[1].name], r.rv_deleting[r.old[0].name]
    assert ready is not None and deleting is not None and ready < deleting


def test_the_view_holds_the_reference_counts_for_every_symbol_that_is_listed(
    rollout_run: RolloutRun, reference_run: ReferenceRun
) -> None:
    r = rollout_run
    ref = reference_run.lake
    # Joined mid-stream, a collector stores a book snapshot of its own (docs/lake-schema.md):
    # S0 and S1 have the old pod's initial snapshot and their new pod's; S3's pod subscribed
    # while the replay held its streams, so its only snapshot is the capture's own.
    assert {s: r.snapshots.get(s) for s in (r.stayed, r.moved, r.added)} == {r.stayed: 2, r.moved: 2, r.added: 1}
    for symbol in (r.stayed, r.moved, r.added):
        for channel, by_symbol in ref.items():
            extra = r.snapshots[symbol] - 1 if channel == "l2_book" else 0
            assert r.lake[channel].get(symbol, 0) == by_symbol[symbol] + extra, (channel, symbol)


def test_the_removed_symbol_is_what_its_pod_collected(rollout_run: RolloutRun, reference_run: ReferenceRun) -> None:
    r = rollout_run
    got = of_symbols(r.lake, {r.removed})
    assert got == collected(r.old[1]), describe(r.old[1])
    assert sum(totals(got).values()) > 0, "the replaced pod collected nothing of its symbol"
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
