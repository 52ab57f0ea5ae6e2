"""`svoe bench pipeline`: the overhead of svoe on top of cryptofeed, measured.

The same looped capture (a replay exchange in its own process, as fast as possible) runs through
three configurations, one after another:
  cryptofeed_bare           cryptofeed alone with a no-op callback
  cryptofeed_redis_backend  cryptofeed's own Redis stream backend (as upstream cryptostore uses it)
  svoe_pipeline             svoe collector -> Redis -> svoe aggregator -> Parquet on disk
For each: events/s of wall clock and per collector CPU-second, collector RSS, and (svoe) whether
every update was stored. A last run at a fixed rate measures event -> ZMQ subscriber latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from svoe.api.contract import heartbeat_key, stats_key
from svoe.bench import proc
from svoe.net import free_port

CHANNEL = "l2_book"


# ---- the replay exchange, in its own process ---------------------------------------------------
class ReplayProcess:
    def __init__(self, capture_dir: str, exchange: str, speed: float | None = None) -> None:
        args = [sys.executable, "-m", "svoe.cli", "replay", "serve", capture_dir, exchange, "--loop"]
        if speed:
            args += ["--speed", str(speed)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.endpoints: dict[str, str] = {}
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            for key, label in (("websocket", "websocket base:"), ("rest", "rest base:"), ("caFile", "CA file:")):
                if line.strip().startswith(label):
                    self.endpoints[key] = line.split(":", 1)[1].strip()
            if len(self.endpoints) == 3:
                break
        if len(self.endpoints) != 3:
            raise RuntimeError("the replay exchange did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---- workers (run in a child process, so their CPU and RSS are theirs alone) -----------------
def _worker(kind: str, exchange: str, endpoints: dict[str, str], symbols: list[str], deadline: float,
            redis_socket: str | None) -> dict[str, Any]:  # fmt: skip
    """Runs until the wall-clock `deadline` the parent set at spawn time; reports the events and
    CPU seconds at that moment, so start-up counts the same in every configuration and shutdown
    in none."""
    from svoe.exchanges.endpoints import redirected_feed_class
    from svoe.replay import REFERENCE_FEED_OPTIONS

    cls = redirected_feed_class(exchange, endpoints["websocket"], endpoints["rest"], endpoints["caFile"])
    count = 0

    first_cpu = 0.0

    async def noop(book: Any, ts: float) -> None:
        nonlocal count, first_cpu
        count += 1
        if count == 1:  # start-up ends here; what follows is the cost per event
            ru = resource.getrusage(resource.RUSAGE_SELF)
            first_cpu = ru.ru_utime + ru.ru_stime

    callbacks: list[Any] = [noop]
    if kind == "cryptofeed_redis_backend":
        from cryptofeed.backends.redis import BookStream

        # cryptofeed builds the URL from `host` when `socket` is set
        callbacks.append(BookStream(host=redis_socket, socket=True))  # type: ignore[no-untyped-call]
    elif kind == "cryptofeed_zmq_backend":
        from cryptofeed.backends.zmq import BookZMQ

        # The peer of svoe's live stream: cryptofeed's own ZMQ backend, every update published.
        callbacks.append(BookZMQ(host="127.0.0.1", port=int(redis_socket or 0), snapshot_interval=10**9))  # type: ignore[no-untyped-call]

    result: dict[str, Any] = {}

    async def run() -> None:
        feed = cls(channels=[CHANNEL], symbols=symbols, callbacks={CHANNEL: callbacks}, **REFERENCE_FEED_OPTIONS)
        stop = asyncio.Event()
        task = asyncio.create_task(feed.run(stop))
        await asyncio.sleep(max(0.0, deadline - time.time()))
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu = ru.ru_utime + ru.ru_stime
        result.update(events=count, cpu=cpu, rss_max_kb=ru.ru_maxrss)
        result["cpu_s_per_million"] = (cpu - first_cpu) / max(count - 1, 1) * 1e6
        stop.set()
        await asyncio.wait_for(task, 60)

    asyncio.run(run())
    return result


# ---- helpers -----------------------------------------------------------------------------------
def _redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    sock = str(tmp / "r.sock")
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", sock, "--dir", str(tmp), "--appendonly", "yes",
         "--appendfsync", "always", "--save", ""],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    while not os.path.exists(sock):
        time.sleep(0.02)
    return proc, sock


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
    redis_proc, sock = _redis(tmp) if kind == "cryptofeed_redis_backend" else (None, None)
    try:
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache")}
        started = time.time()
        payload = json.dumps([kind, exchange, replay.endpoints, symbols, started + seconds, sock])
        out = subprocess.run(
            [sys.executable, "-m", "svoe.bench.pipeline", "--worker", payload],
            capture_output=True, text=True, env=env, timeout=seconds + 120, check=True,
        )  # fmt: skip
        res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        res["wall"] = seconds
        if sock:
            res["stored"] = _redis_len(sock)
        return res
    finally:
        replay.stop()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def write_manifest(tmp: Path, exchange: str, symbols: list[str], endpoints: dict[str, str], flush: float,
                   live_port: int | None) -> dict[str, str]:  # fmt: skip
    """The bench's DataFeed at tmp/feed.yaml; returns the environment its processes run with."""
    doc = {
        "apiVersion": "svoe.io/v1alpha1",
        "kind": "DataFeed",
        "metadata": {"name": "bench"},
        "spec": {
            "exchange": exchange,
            "channels": [CHANNEL],
            "symbols": symbols,
            "endpoints": endpoints,
            "storage": {"lake": str(tmp / "lake"), "flushIntervalSeconds": flush},
            "live": {"enabled": live_port is not None, "port": live_port or free_port()},
        },
    }
    (tmp / "feed.yaml").write_text(yaml.safe_dump(doc))
    (tmp / "m").mkdir(exist_ok=True)
    return {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache"), "PROMETHEUS_MULTIPROC_DIR": str(tmp / "m")}


def run_svoe(capture_dir: str, exchange: str, symbols: list[str], seconds: float, speed: float | None = None,
             latency: bool = False) -> dict[str, Any]:  # fmt: skip
    from svoe.lake.scan import LakeScanner
    from svoe.lake.stats import lake_counts

    tmp = Path(tempfile.mkdtemp(prefix="svoe-bench-"))
    replay = ReplayProcess(capture_dir, exchange, speed)
    redis_proc, sock = _redis(tmp)
    live_port = free_port()
    flush = float(os.environ.get("SVOE_BENCH_FLUSH", "5"))
    env = write_manifest(tmp, exchange, symbols, replay.endpoints, flush, live_port if latency else None)
    common = ["--manifest", str(tmp / "feed.yaml"), "--redis", f"unix://{sock}", "--health-host", "127.0.0.1"]
    lat: list[tuple[float, float, float]] = []
    stop_sub = threading.Event()
    sub_thread = None
    if latency:
        sub_thread = threading.Thread(target=_subscribe, args=(live_port, lat, stop_sub), daemon=True)
        sub_thread.start()
    started = time.monotonic()
    agg = subprocess.Popen(
        [sys.executable, "-m", "svoe.cli", "aggregator", *common, "--health-port", str(free_port())], env=env
    )
    col = subprocess.Popen(
        [sys.executable, "-m", "svoe.cli", "collector", *common, "--health-port", str(free_port()),
         "--log-file", str(tmp / "fh.log")], env=env,
    )  # fmt: skip
    rss: list[int] = []
    pod = (col.pid, agg.pid, redis_proc.pid)
    try:
        import redis

        stats = redis.Redis(unix_socket_path=sock)
        # Start-up ends at the first collected event: the whole pod's CPU from then on, down to
        # the last block written while draining, is the pod's cost for the events after it.
        startup_cpu, collected_at_start = None, 0
        parts_at_start: dict[str, float] = {}
        backlog_max = 0  # the largest backlog the aggregator reported (its heartbeat, every second)
        while time.monotonic() - started < seconds:
            time.sleep(min(0.2 if startup_cpu is None else 1.0, max(0.0, seconds - (time.monotonic() - started))))
            rss.append(proc.rss_kb(col.pid))
            backlog_max = max(backlog_max, int(stats.hget(heartbeat_key(exchange), "backlog") or 0))
            if startup_cpu is None:
                n = int(stats.hget(stats_key(exchange), "collected") or 0)
                if n:
                    parts_at_start, collected_at_start = proc.pod_parts(*pod), n
                    startup_cpu = sum(parts_at_start.values())
        cpu = proc.cpu_seconds(col.pid)
        parts = proc.pod_parts(*pod)
        at_deadline = int(stats.hget(stats_key(exchange), "collected") or 0)
        wall = time.monotonic() - started
        col.send_signal(signal.SIGTERM)
        pod_cpu = proc.wait_cpu_seconds(col, 60)
        agg.send_signal(signal.SIGTERM)
        pod_cpu += proc.wait_cpu_seconds(agg, 300)
        # Every entry the collector wrote (`collected`) counts its feed's own events too, so they
        # are compared with every row in the lake, feed events included.
        scanner = LakeScanner(str(tmp / "lake"))
        entries_stored = sum(scanner.row_count(b) for b in scanner.blocks(scanner.channels()))
        stored = sum(lake_counts(str(tmp / "lake"), raw=True).get(exchange, {}).get(CHANNEL, {}).values())
        collected = int(stats.hget(stats_key(exchange), "collected") or 0)
        redis_proc.terminate()
        pod_cpu += proc.wait_cpu_seconds(redis_proc, 30)
        lake_bytes = sum(p.stat().st_size for p in (tmp / "lake").rglob("*.parquet") if ".svoe-state" not in p.parts)
        res: dict[str, Any] = {
            "events": at_deadline,
            "stored": stored,
            "entries_stored": entries_stored,
            "collected": collected,
            "wall": wall,
            "cpu": cpu,
            "rss_kb_first": rss[1] if len(rss) > 1 else (rss[0] if rss else 0),
            "rss_kb_last": rss[-1] if rss else 0,
            "backlog_max": backlog_max,
            "lake_bytes": lake_bytes,
            "pod_cpu_s_per_million": (pod_cpu - (startup_cpu or 0.0)) / max(stored - collected_at_start, 1) * 1e6,
            # Each process's share up to the deadline (the drain at shutdown is not in these).
            "pod_cpu_breakdown_s_per_million": {
                k: (v - parts_at_start.get(k, 0.0)) / max(at_deadline - collected_at_start, 1) * 1e6
                for k, v in parts.items()
            },
        }
        if latency:
            stop_sub.set()
            if sub_thread is not None:
                sub_thread.join()
            if lat:
                from svoe.bench.live_latency import quantiles

                res["latency_ms"] = {
                    **quantiles([(t, total) for t, total, _ in lat]),
                    "callback_to_append_p99": quantiles([(t, to_redis) for t, _, to_redis in lat])["p99"],
                }
        return res
    finally:
        for p in (col, agg):
            if p.poll() is None:
                p.kill()
        replay.stop()
        if redis_proc.returncode is None:
            redis_proc.terminate()
            redis_proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _subscribe(port: int, out: list[tuple[float, float, float]], stop: threading.Event) -> None:
    import orjson
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.setsockopt(zmq.RCVTIMEO, 200)
    s.connect(f"tcp://127.0.0.1:{port}")
    while not stop.is_set():
        try:
            _, payload, entry_id = s.recv_multipart()
        except zmq.Again:
            continue
        now = time.time()
        receipt = float(orjson.loads(payload)[1])
        in_redis = int(entry_id.split(b"-")[0]) / 1000  # the collector's id: its clock at append
        out.append((now, now - receipt, in_redis - receipt))
    s.close()
    ctx.term()


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
    from svoe.bench.drain import run_drain
    from svoe.bench.live_latency import compare

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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", required=True)
    a = p.parse_args()
    kind, exchange, endpoints, symbols, deadline, sock = json.loads(a.worker)
    print(json.dumps(_worker(kind, exchange, endpoints, symbols, deadline, sock)))


if __name__ == "__main__":
    main()
