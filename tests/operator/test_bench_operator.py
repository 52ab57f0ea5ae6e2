"""`svoe bench operator`: the real command, small, end to end; and its histogram arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from svoe.bench.operator import histogram_quantile, reconcile_buckets
from tests.pipeline_support import svoe

COUNT, SHARDS = 3, 2


def test_bench_operator_reports_what_the_operator_did(tmp_path: Path) -> None:
    res = svoe(
        "bench", "operator", "--count", str(COUNT), "--shards-per-feed", str(SHARDS), "--timeout", "60",
        "--log-dir", str(tmp_path), timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)

    assert (r["datafeeds"], r["shards_per_feed"], r["children"]) == (COUNT, SHARDS, COUNT * SHARDS * 3)
    # Counted in the emulator's store, not derived from the arguments.
    assert r["last_progress"] == {"pods": COUNT * SHARDS, "configmaps": COUNT * SHARDS, "services": COUNT * SHARDS,
                                  "ready": COUNT}  # fmt: skip
    by_kind = r["api_requests_by_kind"]
    assert by_kind["POST datafeeds"] == COUNT
    for kind in ("pods", "configmaps", "services"):
        assert by_kind[f"POST {kind}"] == COUNT * SHARDS, by_kind
    assert by_kind.get("PATCH datafeeds/status", 0) >= COUNT  # each DataFeed's Ready was written by the operator
    assert sum(by_kind.values()) == r["api_requests"]

    assert 0 < r["create_requests_s"] <= r["children_s"] <= r["ready_s"] < 60
    # Each feed's latency is measured from its own create request, so none exceeds the whole run.
    assert 0 < r["feed_ready_p50_s"] <= r["feed_ready_p99_s"] <= r["ready_s"]
    assert r["reconcile_passes"] >= COUNT
    assert 0 < r["reconcile_p50_s"] <= r["reconcile_p99_s"]
    assert r["operator_cpu_s"] > 0 and r["emulator_cpu_s"] >= 0
    log = (tmp_path / "operator-1.log").read_text()
    assert log.count("Handler 'create' succeeded") == COUNT, log[-2000:]


def test_bench_operator_rejects_a_count_below_one() -> None:
    res = svoe("bench", "operator", "--count", "0", timeout=60)
    assert res.returncode == 2 and "--count must be at least 1" in res.stderr


def test_reconcile_quantiles_follow_promql_interpolation() -> None:
    registry = CollectorRegistry()
    h = Histogram("svoe_reconcile_duration_seconds", "", ["handler"], buckets=(0.1, 0.5), registry=registry)
    for v in (0.05,) * 5 + (0.3,) * 5:
        h.labels("reconcile").observe(v)
    h.labels("other").observe(9)
    buckets = reconcile_buckets(generate_latest(registry).decode())
    assert buckets == [(0.1, 5.0), (0.5, 10.0), (float("inf"), 10.0)]
    # PromQL: rank q*total, linear within the bucket that holds it.
    assert histogram_quantile(0.5, buckets) == 0.1
    assert abs(histogram_quantile(0.75, buckets) - (0.1 + 0.4 * 2.5 / 5)) < 1e-12
    assert histogram_quantile(1.0, buckets) == 0.5
