"""`svoe bench operator`: N DataFeeds created at once against the emulated Kubernetes API server.

`run()` returns the figures (FIGURES says what each means) so that other benchmarks can combine
them in-process; the command prints them as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

from svoe.api import API_GROUP, API_VERSION, PLURAL

# The emulator needs dev-only packages and `svoe --help` builds this command's parser, so it is
# imported where the benchmark runs, not here.
if TYPE_CHECKING:
    from svoe.testing.kube import ApiServer, KubeEmulator

DATAFEEDS = (API_GROUP, API_VERSION, PLURAL)
NAMESPACE = "bench"
# Four symbols, so that 1, 2 and 4 shards per DataFeed divide them evenly.
SYMBOLS = ("NKN-USDT", "BLZ-ETH", "LRC-BTC", "RUNE-EUR")
SHARD_CHOICES = (1, 2, 4)
POLL_S = 0.1
# What the emulator needs beyond a production install (the dev dependency group).
DEV_MODULES = ("kmock", "jsonpatch", "jsonschema", "celpy")
CREATE_THREADS = 16

DESCRIPTION = """\
Create --count DataFeeds at once and time the operator until every one is Ready. The Kubernetes API
emulator (svoe.testing.kube) runs in this process with a stand-in kubelet that reports every new pod
Running and Ready; the real operator runs as its own process (python -m svoe.operator
--all-namespaces), as in production. The DataFeeds are created concurrently over HTTP, then the
emulator's store is polled every 0.1 s until every DataFeed is Ready or --timeout passes.
Exit code 1 when they were not all Ready in time (the figures are printed all the same).

Needs the dev dependencies (make setup): the emulator is test support."""

# What each key of the JSON object means; the CLI shows it in `svoe bench operator --help`.
FIGURES = """\
figures (one JSON object on stdout; seconds are wall clock from the first create request):
  datafeeds, shards_per_feed  the --count and --shards-per-feed asked for
  children                    pods + configmaps + services the operator has to create (count x shards x 3)
  create_requests_s           time to send every create request (16 concurrent clients)
  children_s                  until every shard's pod, configmap and service exists (null: not by the timeout)
  ready_s                     until every DataFeed reports Ready=True (null: not by the timeout; exit code 1)
  feed_ready_p50_s, _p99_s    per DataFeed, its create request to Ready=True as seen by polling every 0.1 s
  reconcile_passes            reconcile passes the operator counted (svoe_reconcile_duration_seconds, handler
                              "reconcile")
  reconcile_p50_s, _p99_s     quantiles of one pass, interpolated within that histogram's buckets like PromQL's
                              histogram_quantile, so they are bucket estimates, not exact timings
  api_requests, api_requests_by_kind
                              requests the emulated API server answered, in total and by "METHOD plural[/sub]
                              [watch]", from the operator and from this bench
  last_progress               the children and Ready DataFeeds counted at the last poll
  operator_cpu_s              CPU seconds (user + system) of the operator process, start to exit
  emulator_cpu_s              CPU seconds of this process over the run: the emulator, its kubelet and the bench's
                              own clients
  started_at                  Unix time of the first create request"""


def run(
    count: int = 500,
    shards_per_feed: int = 2,
    timeout: float = 300.0,
    profile: str | None = None,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the benchmark once and return its figures (see FIGURES); ready_s is None on a timeout.

    profile: a path; the operator then runs under cProfile and writes its stats there on exit.
    log_dir: where the operator's log is kept (default: a temporary directory, deleted).
    Raises RuntimeError when the operator does not start.
    """
    from svoe.api.crd import crd
    from svoe.testing.kube import KubeEmulator
    from svoe.testing.operator import OperatorProcess

    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    if shards_per_feed not in SHARD_CHOICES:
        raise ValueError(f"shards_per_feed must be one of {SHARD_CHOICES}, not {shards_per_feed}")
    # Deltas, not totals: run() may be one of several benchmarks in a process (`svoe bench all`).
    self0, children0 = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix="svoe-bench-operator-") as tmp, KubeEmulator(keep_history=False) as kube:
        kube.apply_crd(crd())
        kube.start_kubelet()
        logs = log_dir or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        # Absolute: the operator runs in the temporary directory.
        python_args = ("-m", "cProfile", "-o", str(Path(profile).resolve())) if profile else ()
        op = OperatorProcess(kube, logs, python_args=python_args, cwd=Path(tmp))
        try:
            op.start()
            result = _measure(kube, count, shards_per_feed, timeout)
            result.update(_reconcile_figures(op.metrics()))
        finally:
            op.stop()
        # RUSAGE_CHILDREN grows only when a child is waited for: here, the operator in stop().
        result["operator_cpu_s"] = round(_cpu(resource.RUSAGE_CHILDREN) - children0, 1)
        result["emulator_cpu_s"] = round(_cpu(resource.RUSAGE_SELF) - self0, 1)
    return result


def feed(name: str, shards: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "DataFeed",
        "metadata": {"name": name},
        "spec": {
            "exchange": "BINANCE",
            "channels": ["trades", "l2_book", "ticker", "candles"],
            "symbols": list(SYMBOLS),
            "storage": {"lake": "./lake"},
            "sharding": {"maxSymbolsPerPod": len(SYMBOLS) // shards},
        },
    }


def _measure(kube: KubeEmulator, n: int, shards: int, timeout: float) -> dict[str, Any]:
    created: dict[str, float] = {}
    ready_at: dict[str, float] = {}

    def create(i: int) -> None:
        name = f"feed-{i:04d}"
        created[name] = time.monotonic()
        kube.create(DATAFEEDS, feed(name, shards), NAMESPACE)

    started_at = time.time()
    t0 = time.monotonic()
    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        list(pool.map(create, range(n)))
    create_requests_s = time.monotonic() - t0
    children_s = ready_s = None
    deadline = t0 + timeout
    last: dict[str, int] = {}
    while time.monotonic() < deadline:
        last, ready = kube.call(_progress)
        now = time.monotonic()
        for name in ready.difference(ready_at):
            ready_at[name] = now
        if children_s is None and min(last["pods"], last["configmaps"], last["services"]) >= n * shards:
            children_s = now - t0
        if len(ready_at) >= n:
            ready_s = now - t0
            break
        time.sleep(POLL_S)
    latencies = sorted(ready_at[k] - created[k] for k in ready_at if k in created)
    requests, by_kind = kube.call(_requests)
    return {
        "datafeeds": n,
        "shards_per_feed": shards,
        "children": n * shards * 3,
        "create_requests_s": round(create_requests_s, 2),
        "children_s": None if children_s is None else round(children_s, 2),
        "ready_s": None if ready_s is None else round(ready_s, 2),
        "feed_ready_p50_s": _quantile(latencies, 0.5),
        "feed_ready_p99_s": _quantile(latencies, 0.99),
        "api_requests": requests,
        "api_requests_by_kind": by_kind,
        "last_progress": last,
        "started_at": started_at,
    }


def _progress(s: ApiServer) -> tuple[dict[str, int], set[str]]:
    # Runs on the emulator's loop, so the counts are one consistent reading of the store.
    from svoe.testing.kube import CONFIGMAPS, PODS, SERVICES

    ready = {
        name
        for (_, name), obj in s.store[DATAFEEDS].items()
        if any(
            c["type"] == "Ready" and c["status"] == "True" for c in (obj.get("status") or {}).get("conditions") or []
        )
    }
    counts = {
        "pods": len(s.store[PODS]),
        "configmaps": len(s.store[CONFIGMAPS]),
        "services": len(s.store[SERVICES]),
        "ready": len(ready),
    }
    return counts, ready


def _requests(s: ApiServer) -> tuple[int, dict[str, int]]:
    by_kind: dict[str, int] = {}
    for (method, plural, sub, watch), v in sorted(s.request_stats.items()):
        key = f"{method} {plural}" + (f"/{sub}" if sub else "") + (" watch" if watch == "true" else "")
        by_kind[key] = by_kind.get(key, 0) + v
    return s.request_count, by_kind


def _reconcile_figures(metrics: str) -> dict[str, Any]:
    buckets = reconcile_buckets(metrics)
    passes = buckets[-1][1] if buckets else 0.0
    return {
        "reconcile_passes": int(passes),
        "reconcile_p50_s": round(histogram_quantile(0.5, buckets), 4) if passes else None,
        "reconcile_p99_s": round(histogram_quantile(0.99, buckets), 4) if passes else None,
    }


def reconcile_buckets(metrics: str, handler: str = "reconcile") -> list[tuple[float, float]]:
    """The cumulative (upper bound, count) buckets of svoe_reconcile_duration_seconds for one handler."""
    out: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(metrics):
        if family.name != "svoe_reconcile_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("handler") == handler:
                out.append((float(sample.labels["le"]), float(sample.value)))
    return sorted(out)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """PromQL's histogram_quantile over cumulative (upper bound, count) buckets, sorted by bound."""
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / max(count - prev_count, 1e-12)
        prev_bound, prev_count = bound, count
    return prev_bound


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 2)


# ---- `svoe bench operator` ----------------------------------------------------------------------
def add_operator_command(bench: Any) -> None:
    """Register `svoe bench operator` on the `svoe bench` subparsers."""
    bo = bench.add_parser(
        "operator",
        help="the kopf operator reconciling N DataFeeds at once against the emulated API server",
        description=DESCRIPTION,
        epilog=FIGURES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bo.add_argument("--count", type=int, default=500, help="DataFeeds to create at once (default 500)")
    bo.add_argument(
        "--shards-per-feed",
        type=int,
        default=2,
        choices=SHARD_CHOICES,
        help=f"feed pods per DataFeed: its {len(SYMBOLS)} symbols split evenly (default 2)",
    )
    bo.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for every DataFeed to be Ready (default 300)"
    )
    bo.add_argument("--profile", metavar="PATH", help="run the operator under cProfile, writing its stats to PATH")
    bo.add_argument(
        "--log-dir", metavar="DIR", type=Path, help="keep the operator's log in DIR (default: a temporary directory)"
    )
    bo.set_defaults(func=cmd_bench_operator)


def cmd_bench_operator(a: argparse.Namespace) -> int:
    if a.count < 1:
        print(f"svoe bench operator: --count must be at least 1, not {a.count}", file=sys.stderr)
        return 2
    try:
        result = run(a.count, a.shards_per_feed, a.timeout, profile=a.profile, log_dir=a.log_dir)
    except ModuleNotFoundError as err:
        if err.name not in DEV_MODULES:
            raise
        print(f"svoe bench operator: {err}; it needs the dev dependencies (make setup)", file=sys.stderr)
        return 1
    except RuntimeError as err:
        print(f"svoe bench operator: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0 if result["ready_s"] is not None else 1
