"""The real operator, `python -m svoe.operator`, as a child process against a `KubeEmulator`.

The operator tests, the local e2e run and `svoe bench operator` start it the way production does
(a separate process reading a kubeconfig), so what they measure includes kopf's own watch and
patch traffic rather than handler calls made in-process.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from svoe.net import free_port
from svoe.testing.kube import KubeEmulator

__all__ = ["OperatorProcess"]


class OperatorProcess:
    """`python -m svoe.operator --all-namespaces` against the emulator, as in production.

    env: extra environment of the operator (e.g. SVOE_HEALTH_INTERVAL_SECONDS); python_args go
    before `-m svoe.operator` (e.g. `-m cProfile -o PATH`); cwd defaults to this process's.
    Each start logs to its own `operator-N.log` under log_dir.
    """

    def __init__(
        self,
        kube: KubeEmulator,
        log_dir: Path,
        *,
        python_args: Sequence[str] = (),
        cwd: Path | None = None,
        **env: str,
    ) -> None:
        self.kube = kube
        self.log_dir = log_dir
        self.python_args = tuple(python_args)
        self.cwd = cwd
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def start(self, *args: str, timeout: float = 60) -> None:
        self.starts += 1
        self.metrics_port = free_port()
        env = self.kube.env(SVOE_OPERATOR_METRICS_PORT=str(self.metrics_port), **self.env)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *self.python_args, "-m", "svoe.operator", *(args or ("--all-namespaces",))],
                env=env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the operator did not start:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-20000:] for p in sorted(self.log_dir.glob("operator-*.log")))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())
