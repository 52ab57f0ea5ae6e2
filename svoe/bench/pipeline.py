"""`svoe bench pipeline`: the overhead of svoe on top of cryptofeed, measured.

The same looped capture (the replay exchange in its own process, as fast as possible) runs
through three configurations, one after another:
  cryptofeed_bare           cryptofeed alone with a no-op callback (bare.py)
  cryptofeed_redis_backend  cryptofeed's own Redis stream backend (bare.py)
  svoe_pipeline             svoe collector -> Redis -> svoe aggregator -> Parquet on disk (pod.py)
For each: events/s of wall clock and per collector CPU-second, collector RSS, and (svoe) the whole
pod's CPU per event and whether every update was stored. Then the aggregator's drain of a backlog
(drain.py) and live latency beside cryptofeed's ZMQ backend (live_latency.py). rig.py holds what
they all stand on.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from svoe.bench.bare import run_cryptofeed
from svoe.bench.drain import run_drain
from svoe.bench.live_latency import compare
from svoe.bench.pod import run_svoe
from svoe.bench.rig import CHANNEL, ReplayProcess, start_redis


def _redis_len(sock: str) -> int:
    import redis

    r = redis.Redis(unix_socket_path=sock)
    return sum(int(r.xlen(k)) for k in r.scan_iter("*"))


def _raw_bytes_per_update(capture_dir: str, exchange: str) -> float:
    """Average size of one raw depth message in the capture (the looped replay repeats them)."""
    from svoe.replay import load_capture

    sizes = []
    for stream in load_capture(capture_dir, exchange).streams:
        for m in stream.messages:
            body = m.data if isinstance(m.data, str) else m.data.decode("utf-8", "replace")
            if "@depth" in body:
                sizes.append(len(body.encode()))
    return statistics.mean(sizes) if sizes else 0.0


def run_bare(kind: str, capture_dir: str, exchange: str, symbols: list[str], seconds: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="svoe-bench-"))
    replay = ReplayProcess(capture_dir, exchange)
    redis = start_redis(tmp) if kind == "cryptofeed_redis_backend" else None
    try:
        sock = redis.socket_path if redis else None
        res = run_cryptofeed(kind, exchange, replay.endpoints, symbols, seconds, sock, str(tmp / "cache"))
        res["wall"] = seconds
        if sock:
            res["stored"] = _redis_len(sock)
        return res
    finally:
        replay.stop()
        if redis is not None:
            redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def bench_pipeline(capture_dir: str, exchange: str, repeat: int, seconds: float, soak: float = 0) -> dict[str, Any]:
    """Every pipeline figure as one dict (progress goes to stderr)."""
    from svoe.replay import capture_subscription

    symbols = capture_subscription(capture_dir, exchange)[CHANNEL]
    configs = ("cryptofeed_bare", "cryptofeed_redis_backend", "svoe_pipeline")
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    for i in range(repeat):
        for c in configs:
            print(f"[{i + 1}/{repeat}] {c}: {seconds:.0f}s ...", file=sys.stderr, flush=True)
            r = (
                run_svoe(capture_dir, exchange, symbols, seconds)
                if c == "svoe_pipeline"
                else run_bare(c, capture_dir, exchange, symbols, seconds)
            )
            r["eps"] = r["events"] / r["wall"]
            r["eps_per_cpu_second"] = r["events"] / r["cpu"] if r["cpu"] else 0.0
            runs[c].append(r)
            print(f"    {json.dumps(r)}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {}
    for c in configs:
        out[f"{c}_eps"] = statistics.median(r["eps"] for r in runs[c])
        out[f"{c}_eps_per_cpu_second"] = statistics.median(r["eps_per_cpu_second"] for r in runs[c])
        out[f"{c}_runs"] = runs[c]
    out["svoe_vs_bare_eps"] = out["svoe_pipeline_eps"] / out["cryptofeed_bare_eps"]
    out["svoe_vs_bare_eps_per_cpu"] = (
        out["svoe_pipeline_eps_per_cpu_second"] / out["cryptofeed_bare_eps_per_cpu_second"]
    )
    last = runs["svoe_pipeline"][-1]
    out["svoe_every_update_stored"] = all(r["entries_stored"] == r["collected"] for r in runs["svoe_pipeline"])
    raw = _raw_bytes_per_update(capture_dir, exchange)
    out["lake_bytes_per_update"] = last["lake_bytes"] / max(last["stored"], 1)
    out["raw_json_bytes_per_update"] = raw
    out["lake_to_raw_ratio"] = out["lake_bytes_per_update"] / raw if raw else None
    # The whole pod's cost (collector, redis-server, aggregator and its block writer, from /proc
    # and wait4) beside bare cryptofeed's, both from the first event on.
    out["pod_cpu_s_per_million"] = statistics.median(r["pod_cpu_s_per_million"] for r in runs["svoe_pipeline"])
    out["bare_cpu_s_per_million"] = statistics.median(r["cpu_s_per_million"] for r in runs["cryptofeed_bare"])
    out["pod_vs_bare_cpu"] = out["pod_cpu_s_per_million"] / out["bare_cpu_s_per_million"]
    parts = [r["pod_cpu_breakdown_s_per_million"] for r in runs["svoe_pipeline"]]
    out["pod_cpu_breakdown_s_per_million"] = {k: statistics.median(p[k] for p in parts) for k in parts[0]}

    print(f"aggregator drain of a {seconds:.0f}s backlog ...", file=sys.stderr, flush=True)
    out["drain"] = run_drain(capture_dir, exchange, symbols, seconds)
    out["drain_vs_collector_max"] = out["drain"]["drain_eps"] / out["svoe_pipeline_eps"]
    out["live_latency"] = compare(capture_dir, exchange, symbols, min(seconds, 15))
    if soak:
        # Memory and backlog over a long run at full speed: both must stay bounded.
        print(f"soak run at full speed: {soak:.0f}s ...", file=sys.stderr, flush=True)
        long = run_svoe(capture_dir, exchange, symbols, soak)
        out["soak"] = {k: long[k] for k in ("events", "wall", "stored", "collected", "rss_kb_first", "rss_kb_last",
                                            "backlog_max", "pod_cpu_s_per_million",
                                            "pod_cpu_breakdown_s_per_million")}  # fmt: skip
        out["soak"]["every_update_stored"] = long["entries_stored"] == long["collected"]
    out["collector_rss_kb"] = {"first": last["rss_kb_first"], "last": last["rss_kb_last"]}
    return out


def bench_main(capture_dir: str, exchange: str, repeat: int, as_json: bool, seconds: float, soak: float = 0) -> int:
    out = bench_pipeline(capture_dir, exchange, repeat, seconds, soak)
    if as_json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            if not k.endswith("_runs"):
                print(f"{k}: {v}")
    return 0
