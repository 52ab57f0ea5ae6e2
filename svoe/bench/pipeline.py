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

from svoe.api.contract import stats_key
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
    from svoe.feedpod.endpoints import redirected_feed_class
    from svoe.replay import REFERENCE_FEED_OPTIONS

    cls = redirected_feed_class(exchange, endpoints["websocket"], endpoints["rest"], endpoints["caFile"])
    count = 0

    async def noop(book: Any, ts: float) -> None:
        nonlocal count
        count += 1

    callbacks: list[Any] = [noop]
    if kind == "cryptofeed_redis_backend":
        from cryptofeed.backends.redis import BookStream

        # cryptofeed builds the URL from `host` when `socket` is set
        callbacks.append(BookStream(host=redis_socket, socket=True))  # type: ignore[no-untyped-call]

    result: dict[str, Any] = {}

    async def run() -> None:
        feed = cls(channels=[CHANNEL], symbols=symbols, callbacks={CHANNEL: callbacks}, **REFERENCE_FEED_OPTIONS)
        stop = asyncio.Event()
        task = asyncio.create_task(feed.run(stop))
        await asyncio.sleep(max(0.0, deadline - time.time()))
        ru = resource.getrusage(resource.RUSAGE_SELF)
        result.update(events=count, cpu=ru.ru_utime + ru.ru_stime, rss_max_kb=ru.ru_maxrss)
        stop.set()
        await asyncio.wait_for(task, 60)

    asyncio.run(run())
    return result


# ---- helpers -----------------------------------------------------------------------------------
def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


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


def run_svoe(capture_dir: str, exchange: str, symbols: list[str], seconds: float, speed: float | None = None,
             latency: bool = False) -> dict[str, Any]:  # fmt: skip
    from svoe.lake.stats import lake_counts

    tmp = Path(tempfile.mkdtemp(prefix="svoe-bench-"))
    replay = ReplayProcess(capture_dir, exchange, speed)
    redis_proc, sock = _redis(tmp)
    live_port = free_port()
    doc = {
        "apiVersion": "svoe.io/v1alpha1",
        "kind": "DataFeed",
        "metadata": {"name": "bench"},
        "spec": {
            "exchange": exchange,
            "channels": [CHANNEL],
            "symbols": symbols,
            "endpoints": replay.endpoints,
            "storage": {
                "lake": str(tmp / "lake"),
                "flushIntervalSeconds": float(os.environ.get("SVOE_BENCH_FLUSH", "5")),
            },
            "live": {"enabled": latency, "port": live_port},
        },
    }
    (tmp / "feed.yaml").write_text(yaml.safe_dump(doc))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache"), "PROMETHEUS_MULTIPROC_DIR": str(tmp / "m")}
    (tmp / "m").mkdir()
    common = ["--manifest", str(tmp / "feed.yaml"), "--redis", f"unix://{sock}", "--health-host", "127.0.0.1"]
    lat: list[tuple[float, float]] = []
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
    try:
        import redis

        stats = redis.Redis(unix_socket_path=sock)
        while time.monotonic() - started < seconds:
            time.sleep(min(1.0, max(0.0, seconds - (time.monotonic() - started))))
            rss.append(_proc_rss_kb(col.pid))
        cpu = _proc_cpu(col.pid)
        at_deadline = int(stats.hget(stats_key(exchange), "collected") or 0)
        wall = time.monotonic() - started
        col.send_signal(signal.SIGTERM)
        col.wait(timeout=60)
        agg.send_signal(signal.SIGTERM)
        agg.wait(timeout=300)
        stored = sum(lake_counts(str(tmp / "lake"), raw=True).get(exchange, {}).get(CHANNEL, {}).values())
        collected = int(stats.hget(stats_key(exchange), "collected") or 0)
        lake_bytes = sum(p.stat().st_size for p in (tmp / "lake").rglob("*.parquet") if ".svoe-state" not in p.parts)
        res: dict[str, Any] = {
            "events": at_deadline,
            "stored": stored,
            "collected": collected,
            "wall": wall,
            "cpu": cpu,
            "rss_kb_first": rss[1] if len(rss) > 1 else (rss[0] if rss else 0),
            "rss_kb_last": rss[-1] if rss else 0,
            "lake_bytes": lake_bytes,
        }
        if latency:
            stop_sub.set()
            if sub_thread is not None:
                sub_thread.join()
            if lat:
                total = sorted(t for t, _ in lat)
                to_redis = sorted(r for _, r in lat)
                res["latency_ms"] = {
                    "p50": total[len(total) // 2] * 1000,
                    "p99": total[int(len(total) * 0.99)] * 1000,
                    "callback_to_append_p99": to_redis[int(len(to_redis) * 0.99)] * 1000,
                    "samples": len(total),
                }
        return res
    finally:
        for p in (col, agg):
            if p.poll() is None:
                p.kill()
        replay.stop()
        redis_proc.terminate()
        redis_proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _subscribe(port: int, out: list[tuple[float, float]], stop: threading.Event) -> None:
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
        out.append((now - receipt, in_redis - receipt))
    s.close()
    ctx.term()


def bench_main(capture_dir: str, exchange: str, repeat: int, as_json: bool, seconds: float) -> int:
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
    out["svoe_every_update_stored"] = all(r["stored"] == r["collected"] for r in runs["svoe_pipeline"])
    raw = _raw_bytes_per_update(capture_dir, exchange)
    out["lake_bytes_per_update"] = last["lake_bytes"] / max(last["stored"], 1)
    out["raw_json_bytes_per_update"] = raw
    out["lake_to_raw_ratio"] = out["lake_bytes_per_update"] / raw if raw else None
    # Latency at a fixed rate near 10k events/s: the capture's depth rate x speed.
    print("latency run at a fixed rate ...", file=sys.stderr, flush=True)
    lat = run_svoe(capture_dir, exchange, symbols, min(seconds, 15), speed=1200.0, latency=True)
    out["latency_run_eps"] = lat["events"] / lat["wall"]
    out["latency_ms"] = lat.get("latency_ms")
    out["collector_rss_kb"] = {"first": last["rss_kb_first"], "last": last["rss_kb_last"]}
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
