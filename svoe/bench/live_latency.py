"""Live latency against the peer: svoe's live stream beside cryptofeed's own ZMQ backend.

Both run the same looped capture at the same replay rate, each with a ZMQ subscriber in the bench
process, and both are timed from cryptofeed's receipt timestamp to the subscriber. svoe also
writes the lake meanwhile; the peer only publishes.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from svoe.bench.bare import run_cryptofeed
from svoe.bench.pod import run_svoe
from svoe.bench.rig import ReplayProcess
from svoe.net import free_port

# Replay speed factors that give about 2k, 5k and 10k BINANCE depth events/s from the capture.
SPEEDS = {"2k": 360.0, "5k": 900.0, "10k": 1800.0}


# Samples that arrive within this many seconds of the first are start-up (connections, imports,
# the aggregator's block-writer process), left out of the steady-state figures for both.
WARMUP_SECONDS = 2.0


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000 if ordered else float("nan")


def quantiles(samples: list[tuple[float, float]]) -> dict[str, float]:
    """p50/p99 in ms of (arrival time, latency) samples after the warm-up, and p99 with it."""
    if not samples:
        return {"p50": float("nan"), "p99": float("nan"), "p99_with_startup": float("nan"), "samples": 0}
    start = min(t for t, _ in samples) + WARMUP_SECONDS
    steady = sorted(lat for t, lat in samples if t >= start)
    return {
        "p50": _pct(steady, 0.5),
        "p99": _pct(steady, 0.99),
        "p99_with_startup": _pct(sorted(lat for _, lat in samples), 0.99),
        "samples": len(steady),
    }


def _subscribe_peer(port: int, out: list[tuple[float, float]], stop: threading.Event, ready: threading.Event) -> None:
    import orjson
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.setsockopt(zmq.RCVTIMEO, 200)
    s.bind(f"tcp://127.0.0.1:{port}")  # cryptofeed's backend connects its PUB socket
    ready.set()
    while not stop.is_set():
        try:
            msg = s.recv()
        except zmq.Again:
            continue
        now = time.time()
        body = orjson.loads(msg.split(b" ", 1)[1])
        out.append((now, now - float(body["receipt_timestamp"])))
    s.close()
    ctx.term()


def run_peer(capture_dir: str, exchange: str, symbols: list[str], seconds: float, speed: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="svoe-bench-"))
    replay = ReplayProcess(capture_dir, exchange, speed)
    port = free_port()
    lat: list[tuple[float, float]] = []
    stop, ready = threading.Event(), threading.Event()
    sub = threading.Thread(target=_subscribe_peer, args=(port, lat, stop, ready), daemon=True)
    sub.start()
    ready.wait(5)
    try:
        res = run_cryptofeed("cryptofeed_zmq_backend", exchange, replay.endpoints, symbols, seconds, str(port),
                             str(tmp / "cache"))  # fmt: skip
    finally:
        stop.set()
        sub.join()
        replay.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"eps": res["events"] / seconds, **quantiles(lat)}


def compare(capture_dir: str, exchange: str, symbols: list[str], seconds: float) -> dict[str, Any]:
    """Per rate: svoe's and the peer's p50/p99 in ms, and svoe's p99 as a multiple of the peer's."""
    out: dict[str, Any] = {}
    for label, speed in SPEEDS.items():
        print(f"live latency at ~{label} events/s: cryptofeed ZMQ backend, then svoe ...", file=sys.stderr, flush=True)
        peer = run_peer(capture_dir, exchange, symbols, seconds, speed)
        mine = run_svoe(capture_dir, exchange, symbols, seconds, speed=speed, latency=True)
        samples = mine["latency_samples"]
        svoe_lat = {
            **quantiles([(t, total) for t, total, _ in samples]),
            "callback_to_append_p99": quantiles([(t, to_redis) for t, _, to_redis in samples])["p99"],
        }
        out[label] = {
            "cryptofeed_zmq": peer,
            "svoe": {"eps": mine["events"] / mine["wall"], **svoe_lat},
            "svoe_p99_vs_peer": (svoe_lat.get("p99", float("nan")) / peer["p99"]) if peer["p99"] else None,
        }
    return out
