"""The bench's rig: what every pipeline measurement stands on.

The replay exchange in its own process, a private redis-server (the one `svoe run` starts), the
bench's DataFeed manifest and the command lines of the pod's two svoe processes. `problem` checks
all of it before a bench starts, so a bench fails at once, not minutes in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from svoe.feedpod.local_run import RedisServer, RunError
from svoe.net import free_port

CHANNEL = "l2_book"  # the busiest channel of every capture: the benches loop its depth updates


class ReplayProcess:
    """`svoe replay serve --loop` as a child process: the exchange every configuration reads."""

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


def start_redis(tmp: Path) -> RedisServer:
    """The pod's Redis as `svoe run` starts it: AOF on, fsync always, on a unix socket."""
    return RedisServer.start(tmp / "redis")


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


def pod_command(role: str, tmp: Path, redis: RedisServer) -> list[str]:
    """The command line of the pod's `collector` or `aggregator`, on the manifest in `tmp`."""
    args = [sys.executable, "-m", "svoe.cli", role, "--manifest", str(tmp / "feed.yaml"), "--redis", redis.url,
            "--health-host", "127.0.0.1", "--health-port", str(free_port())]  # fmt: skip
    return [*args, "--log-file", str(tmp / "fh.log")] if role == "collector" else args


def problem(capture_dir: str, exchange: str) -> tuple[str, int] | None:
    """Why the pipeline benches cannot run on this capture (which loads) and machine, with the
    exit code to give: 2 for the arguments, 1 for the machine."""
    from svoe.replay import capture_subscription, loopable_exchanges

    if CHANNEL not in capture_subscription(capture_dir, exchange):
        return f"--exchange {exchange}: its capture in {capture_dir} has no {CHANNEL} to loop", 2
    loopable = loopable_exchanges()
    if exchange not in loopable:
        return f"--exchange {exchange}: its capture cannot be looped; loopable: {', '.join(loopable)}", 2
    try:
        RedisServer.executable()
    except RunError as err:
        return str(err), 1
    return None
