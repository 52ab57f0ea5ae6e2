"""Steps the e2e scenarios share: wait for Ready, for the capture to be collected, delete and drain."""

from __future__ import annotations

import time
from typing import Any

from e2e.local.harness import NAMESPACE, Counts, Exchange, Kubectl, collected, is_deleting, is_ready
from e2e.local.pod_runner import PodRunner, PodSandbox
from svoe.testing.kube import PODS, KubeEmulator
from svoe.testing.waiting import wait_for

FLUSH_SECONDS = 600.0  # nothing is flushed on time: every row reaches the lake through a drain
READY_TIMEOUT = 120.0  # a loaded 2-core CI machine has taken over 60 s to get a rollout's pods Ready
DRAIN_TIMEOUT = 90.0


def feed_pods(kube: KubeEmulator, name: str) -> list[dict[str, Any]]:
    return kube.list(PODS, NAMESPACE, f"svoe.io/datafeed={name}")


def wait_ready(kube: KubeEmulator, kubectl: Kubectl, name: str, shards: int, replicas: int = 1) -> dict[str, str]:
    """Until every pod of the DataFeed is Ready and `kubectl get df` says READY True."""
    pods = shards * replicas
    wait_for(
        lambda: len([p for p in feed_pods(kube, name) if is_ready(p) and not is_deleting(p)]) == pods,
        READY_TIMEOUT,
        f"{pods} Ready pods of {name}",
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

    try:
        stats = wait_for(all_sent, 120, "the whole capture to be sent")
    except TimeoutError as err:
        unsent = {n: st for n, st in ex.stats()["streams"].items() if not st["done"] and n not in held_ok}
        raise TimeoutError(f"{err}; streams not sent to their end: {unsent}") from None
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


def pods_by_shard(kube: KubeEmulator, runner: PodRunner, name: str) -> dict[int, PodSandbox]:
    """The runner's sandbox of each live pod of the DataFeed (one replica), by shard."""
    return {
        int(p["metadata"]["labels"]["svoe.io/shard"]): runner.by_name(p["metadata"]["name"])
        for p in feed_pods(kube, name)
        if not is_deleting(p)
    }
