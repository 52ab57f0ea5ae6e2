"""The svoe pod under the bench: collector -> Redis -> aggregator -> Parquet, as processes.

At full speed it gives svoe's events/s, the whole pod's CPU per event (each process read from the
kernel, svoe/bench/proc.py) and whether every update was stored; at a fixed replay rate, with a
subscriber in this process, the latency from cryptofeed's receipt to the live stream.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from svoe.api.contract import heartbeat_key, stats_key
from svoe.bench import proc
from svoe.bench.rig import CHANNEL, ReplayProcess, pod_command, start_redis, write_manifest
from svoe.net import free_port


def run_svoe(capture_dir: str, exchange: str, symbols: list[str], seconds: float, speed: float | None = None,
             latency: bool = False) -> dict[str, Any]:  # fmt: skip
    from svoe.lake.scan import LakeScanner
    from svoe.lake.stats import lake_counts

    tmp = Path(tempfile.mkdtemp(prefix="svoe-bench-"))
    replay = ReplayProcess(capture_dir, exchange, speed)
    redis = start_redis(tmp)
    live_port = free_port()
    flush = float(os.environ.get("SVOE_BENCH_FLUSH", "5"))
    env = write_manifest(tmp, exchange, symbols, replay.endpoints, flush, live_port if latency else None)
    lat: list[tuple[float, float, float]] = []
    stop_sub = threading.Event()
    sub_thread = None
    if latency:
        sub_thread = threading.Thread(target=_subscribe, args=(live_port, lat, stop_sub), daemon=True)
        sub_thread.start()
    started = time.monotonic()
    agg = subprocess.Popen(pod_command("aggregator", tmp, redis), env=env)
    col = subprocess.Popen(pod_command("collector", tmp, redis), env=env)
    rss: list[int] = []
    pod = (col.pid, agg.pid, redis.proc.pid)
    try:
        import redis as redis_client

        stats = redis_client.Redis(unix_socket_path=redis.socket_path)
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
        redis.proc.terminate()
        pod_cpu += proc.wait_cpu_seconds(redis.proc, 30)
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
            # (arrival at the subscriber, receipt -> subscriber, receipt -> Redis) per event, seconds
            res["latency_samples"] = lat
        return res
    finally:
        for p in (col, agg):
            if p.poll() is None:
                p.kill()
        replay.stop()
        redis.stop()
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
