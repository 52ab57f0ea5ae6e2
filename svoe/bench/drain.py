"""The aggregator's headroom: how fast it drains a backlog that the collector left in Redis.

The collector fills Redis alone for a while and stops; then the aggregator starts on the backlog.
Its rate counts the rows of the blocks it wrote before it went quiet: the partial blocks that
wait for the flush interval by design are left out (the interval is set long so they are plain
to see), and so is start-up, which ends when the aggregator first reports its heartbeat.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from svoe.api.contract import heartbeat_key, stats_key
from svoe.bench import proc
from svoe.bench.rig import ReplayProcess, pod_command, start_redis, write_manifest

QUIET_SECONDS = 2.0  # no block for this long: only partial blocks are left
FLUSH_INTERVAL = 60.0


def run_drain(capture_dir: str, exchange: str, symbols: list[str], fill_seconds: float) -> dict[str, Any]:
    import redis as redis_client

    tmp = Path(tempfile.mkdtemp(prefix="svoe-bench-"))
    replay = ReplayProcess(capture_dir, exchange)
    redis = start_redis(tmp)
    env = write_manifest(tmp, exchange, symbols, replay.endpoints, FLUSH_INTERVAL, None)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        col = subprocess.Popen(pod_command("collector", tmp, redis), env=env)
        procs.append(col)
        time.sleep(fill_seconds)
        col.send_signal(signal.SIGTERM)
        col.wait(60)
        replay.stop()
        r = redis_client.Redis(unix_socket_path=redis.socket_path)
        backlog = int(r.hget(stats_key(exchange), "collected") or 0)
        agg = subprocess.Popen(pod_command("aggregator", tmp, redis), env=env)
        procs.append(agg)
        while not r.exists(heartbeat_key(exchange)):
            time.sleep(0.01)
        t0, cpu0 = time.monotonic(), proc.tree_cpu_seconds(agg.pid)
        flushed, last_change = 0, t0
        while time.monotonic() - last_change < QUIET_SECONDS and flushed < backlog:
            time.sleep(0.01)
            n = int(r.hget(stats_key(exchange), "flushed") or 0)
            if n != flushed:
                flushed, last_change = n, time.monotonic()
        cpu = proc.tree_cpu_seconds(agg.pid) - cpu0
        agg.send_signal(signal.SIGTERM)
        agg.wait(300)
        took = last_change - t0
        return {
            "backlog": backlog,
            "rows_in_full_blocks": flushed,
            "seconds": took,
            "drain_eps": flushed / took if took > 0 else 0.0,
            "aggregator_cpu_s_per_million": cpu / max(flushed, 1) * 1e6,
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        replay.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
