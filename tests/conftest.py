"""Shared fixtures: real redis-server processes, the capture directory, reference counts."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from svoe.net import free_port

BUCKET = "svoe-lake"
ROOT = Path(__file__).resolve().parents[1]
CAPTURES = Path(os.environ.get("SVOE_CAPTURES", ROOT.parent / "shared" / "captures")).resolve()


@pytest.fixture(scope="session")
def captures() -> Path:
    if not (CAPTURES / "README.md").exists():
        pytest.fail(f"capture directory missing at {CAPTURES}; set SVOE_CAPTURES")
    return CAPTURES


def isolated_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The variables that keep a test's processes off the user's directories."""
    return {
        # cryptofeed caches symbol lists under XDG_CACHE_HOME; keep tests off the user's cache.
        "XDG_CACHE_HOME": str(tmp_path_factory.getbasetemp() / "xdg-cache"),
        # `svoe run` keeps an s3:// lake's Redis state under XDG_STATE_HOME; one per test, not per user.
        "XDG_STATE_HOME": str(tmp_path_factory.mktemp("xdg-state")),
    }


def thread_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fixed environment for subprocesses started off the main thread, whose os.environ the
    main thread's monkeypatch changes as tests come and go."""
    return {**os.environ, **isolated_env(tmp_path_factory)}


def selected_params(request: pytest.FixtureRequest, name: str) -> list[str]:
    """The values of parameter `name` of this module's selected tests, in run order: what a module
    fixture should prepare ahead, and no more (`-k BINANCE` prepares only BINANCE)."""
    selected = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and getattr(item, "module", None) is request.module and name in callspec.params:
            selected.append(str(callspec.params[name]))
    return list(dict.fromkeys(selected))


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in isolated_env(tmp_path_factory).items():
        monkeypatch.setenv(k, v)


class RedisProc:
    """A real redis-server on a TCP port, with AOF in its own directory; restartable."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server); .ci/run installs it")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProc]:
    r = RedisProc(tmp_path / "redis", free_port())
    r.start()
    yield r
    r.stop()


@pytest.fixture
def moto() -> Iterator[tuple[int, dict[str, str]]]:
    """A moto server (S3, Glue, Athena) on a free port with bucket BUCKET; yields (port, env)."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "WR_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "WR_GLUE_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_MAX_ATTEMPTS": "2",
    }
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)  # fmt: skip
    yield port, env
    server.stop()
