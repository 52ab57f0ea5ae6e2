"""Operator benchmark: N DataFeeds created at once against the emulated API server.

    python bench/operator_bench.py [--count 500] [--shards-per-feed 2] [--timeout 300]

Starts the emulator (svoe.testing.kube) with a fake kubelet that reports every
new pod Running and Ready, starts the real operator process (`python -m svoe.operator -A`),
creates the DataFeeds concurrently over HTTP, and prints one JSON object:

- children_s: seconds from the first create until every shard's pod, configmap and service exist;
- ready_s: seconds until every DataFeed reports the condition Ready=True;
- reconcile_p50_s / reconcile_p99_s: the operator's reconcile-pass duration quantiles, from its
  own svoe_reconcile_duration_seconds histogram (interpolated within buckets, like PromQL's
  histogram_quantile);
- feed_ready_p50_s / feed_ready_p99_s: per DataFeed, create to Ready.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from svoe.api.crd import crd
from svoe.api.timestamps import parse_rfc3339
from svoe.net import free_port
from svoe.testing.kube import CONFIGMAPS, PODS, SERVICES, ApiServer, KubeEmulator

ROOT = Path(__file__).resolve().parents[1]

DATAFEEDS = ("svoe.io", "v1alpha1", "datafeeds")
NAMESPACE = "bench"


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """PromQL's histogram_quantile over cumulative (upper bound, count) buckets."""
    buckets = sorted(buckets)
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


def reconcile_buckets(metrics: str, handler: str = "reconcile") -> list[tuple[float, float]]:
    out = []
    pattern = re.compile(
        r'^svoe_reconcile_duration_seconds_bucket\{handler="' + handler + r'",le="([^"]+)"\} ([0-9.e+]+)$', re.M
    )
    for le, count in pattern.findall(metrics):
        out.append((float("inf") if le == "+Inf" else float(le), float(count)))
    return out


def feed(name: str, shards: int) -> dict[str, Any]:
    symbols = ["NKN-USDT", "BLZ-ETH", "LRC-BTC", "RUNE-EUR"]
    return {
        "apiVersion": "svoe.io/v1alpha1",
        "kind": "DataFeed",
        "metadata": {"name": name},
        "spec": {
            "exchange": "BINANCE",
            "channels": ["trades", "l2_book", "ticker", "candles"],
            "symbols": symbols,
            "storage": {"lake": "./lake"},
            "sharding": {"maxSymbolsPerPod": -(-len(symbols) // shards)},
        },
    }


def progress(s: ApiServer, shards: int) -> dict[str, Any]:
    """Counted on the emulator's loop: children per kind, Ready DataFeeds and when they turned Ready."""
    ready: dict[str, str] = {}
    for (_, name), obj in s.store[DATAFEEDS].items():
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c["type"] == "Ready" and c["status"] == "True":
                ready[name] = c["lastTransitionTime"]
    return {
        "pods": len(s.store[PODS]),
        "configmaps": len(s.store[CONFIGMAPS]),
        "services": len(s.store[SERVICES]),
        "ready": len(ready),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--shards-per-feed", type=int, default=2, choices=(1, 2, 4))
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    n, shards = a.count, a.shards_per_feed
    with tempfile.TemporaryDirectory(prefix="operator-bench-") as tmp, KubeEmulator(keep_history=False) as kube:
        kube.apply_crd(crd())
        kube.start_kubelet()
        port = free_port()
        log_path = Path(tmp) / "operator.log"
        with log_path.open("wb") as log:
            profile = os.environ.get("BENCH_PROFILE")  # a path: run the operator under cProfile
            prefix = ["-m", "cProfile", "-o", profile] if profile else []
            op = subprocess.Popen(
                [sys.executable, *prefix, "-m", "svoe.operator", "--all-namespaces"],
                env=kube.env(SVOE_OPERATOR_METRICS_PORT=str(port)),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            kube.wait_for(lambda: _up(metrics_url), timeout=60, what="the operator")
            created: dict[str, float] = {}

            def create(i: int) -> None:
                name = f"feed-{i:04d}"
                created[name] = time.time()
                kube.create(DATAFEEDS, feed(name, shards), NAMESPACE)

            t0 = time.monotonic()
            wall0 = time.time()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(create, range(n)))
            created_s = time.monotonic() - t0
            children_s = ready_s = None
            deadline = t0 + a.timeout
            last: dict[str, Any] = {}
            while time.monotonic() < deadline:
                last = kube.call(lambda s: progress(s, shards))
                if children_s is None and min(last["pods"], last["configmaps"], last["services"]) >= n * shards:
                    children_s = time.monotonic() - t0
                if last["ready"] >= n:
                    ready_s = time.monotonic() - t0
                    break
                time.sleep(0.1)
            metrics = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
            buckets = reconcile_buckets(metrics)
            passes = buckets[-1][1] if buckets else 0
            per_feed = kube.call(lambda s: _ready_times(s))
            latencies = sorted(max(0.0, per_feed[k] - created[k]) for k in per_feed if k in created)
            result = {
                "datafeeds": n,
                "shards_per_feed": shards,
                "children": n * shards * 3,
                "create_requests_s": round(created_s, 2),
                "children_s": None if children_s is None else round(children_s, 2),
                "ready_s": None if ready_s is None else round(ready_s, 2),
                "reconcile_passes": int(passes),
                "reconcile_p50_s": round(histogram_quantile(0.5, buckets), 4) if buckets else None,
                "reconcile_p99_s": round(histogram_quantile(0.99, buckets), 4) if buckets else None,
                # Condition times have whole-second resolution.
                "feed_ready_p50_s": _q(latencies, 0.5),
                "feed_ready_p99_s": _q(latencies, 0.99),
                "api_requests": kube.call(lambda s: s.request_count),
                "api_requests_by_kind": kube.call(
                    lambda s: {" ".join(x for x in k if x): v for k, v in sorted(s.request_stats.items())}
                ),
                "last_progress": last,
                "started_at": wall0,
            }
            op.terminate()
            op.wait(30)
            result["operator_cpu_s"] = round(_cpu(resource.RUSAGE_CHILDREN), 1)
            result["emulator_cpu_s"] = round(_cpu(resource.RUSAGE_SELF), 1)
            print(json.dumps(result))
            return 0 if ready_s is not None else 1
        finally:
            op.terminate()
            try:
                op.wait(30)
            except subprocess.TimeoutExpired:
                op.kill()
            if os.environ.get("BENCH_SHOW_LOG"):
                sys.stderr.write(log_path.read_text()[-5000:])


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _up(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).read()
        return True
    except OSError:
        return False


def _ready_times(s: ApiServer) -> dict[str, float]:
    out = {}
    for (_, name), obj in s.store[DATAFEEDS].items():
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c["type"] == "Ready" and c["status"] == "True":
                when = parse_rfc3339(c["lastTransitionTime"])
                if when is not None:
                    out[name] = when.timestamp()
    return out


def _q(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 2)


if __name__ == "__main__":
    raise SystemExit(main())
