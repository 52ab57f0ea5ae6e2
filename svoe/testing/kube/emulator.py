"""`KubeEmulator`: the emulated API server on a background thread, with a kubeconfig and a client.

Synchronous tests, kubectl, a kubelet stand-in and a real operator process all talk to it over
HTTP through the kubeconfig; `call()` runs code on the server's loop for assertions on its state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kmock
import yaml

from svoe.api.timestamps import now_rfc3339
from svoe.operator.kube import resource_path
from svoe.testing.kube.model import CRDS, JSON, NAMESPACES, PODS, ApiError, ResKey
from svoe.testing.kube.server import ApiServer
from svoe.testing.waiting import wait_for


class KubeEmulator:
    """The emulated API server on 127.0.0.1, on its own thread, with a kubeconfig file.

    Use as a context manager. Tests talk to it over HTTP (`request`, `get`, `create`, ...), like
    kubectl or a kubelet would; `server` and `call()` give direct access for assertions on the
    event log.
    """

    def __init__(
        self,
        *,
        validate_custom_resources: bool = True,
        garbage_collection: bool = True,
        workdir: Path | None = None,
        keep_history: bool = True,
        graceful_pod_deletion: bool = False,
    ) -> None:
        self._validate = validate_custom_resources
        self._gc = garbage_collection
        self._graceful_pods = graceful_pod_deletion
        self._keep_history = keep_history
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="kube-emulator-")) if workdir is None else workdir
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: ApiServer | None = None
        self.url = ""
        self.kubeconfig = self.workdir / "kubeconfig"
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._kubelet: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> KubeEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._started.wait(20) or self._error is not None:
            raise RuntimeError(f"the Kubernetes emulator did not start: {self._error!r}")
        self._write_kubeconfig()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported to start()
            self._error = e
            self._started.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = ApiServer()
        server.validate_custom_resources = self._validate
        server.garbage_collection = self._gc
        server.graceful_pod_deletion = self._graceful_pods
        server.keep_history = self._keep_history
        async with server, kmock.Server(server) as srv:
            self.server = server
            self.url = str(srv.url).rstrip("/")
            server.create(NAMESPACES, None, {"metadata": {"name": "default"}})
            self._started.set()
            await self._stop.wait()

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(20)
        if self._own_dir:
            for p in sorted(self.workdir.rglob("*"), reverse=True):
                p.unlink() if p.is_file() else p.rmdir()
            self.workdir.rmdir()

    def _write_kubeconfig(self) -> None:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": "emulator-token"}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "emulator", "namespace": "default"}}
            ],
            "current-context": "emulator",
        }
        self.kubeconfig.write_text(yaml.safe_dump(cfg))

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a subprocess (kubectl, the operator) that should talk to the emulator."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["KUBECACHEDIR"] = str(self.workdir / "kube-cache")
        env.update(extra)
        return env

    # -- direct access (runs on the emulator's loop) --------------------------------------------

    def call[T](self, fn: Callable[[ApiServer], T], timeout: float = 30) -> T:
        """Run `fn(server)` on the emulator's loop and return its result (thread-safe)."""
        assert self.loop is not None and self.server is not None
        server = self.server

        async def run() -> T:
            return fn(server)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def close_gate(self, key: ResKey, method: str) -> None:
        """Hold every `method` request for `key` until `open_gate` (they are then served)."""
        self.call(lambda s: s.gates.__setitem__((key, method.upper()), asyncio.Event()))

    def open_gate(self, key: ResKey, method: str) -> None:
        def release(s: ApiServer) -> None:
            gate = s.gates.pop((key, method.upper()), None)
            if gate is not None:
                gate.set()

        self.call(release)

    def held(self, key: ResKey, method: str) -> int:
        """How many requests a gate has held so far."""
        return self.call(lambda s: s.held.get((key, method.upper()), 0))

    def start_kubelet(self, delay: float = 0.0) -> None:
        """Mark every new pod Running and Ready after `delay` seconds, as a kubelet would report.

        For benchmarks and end-to-end runs where no containers start; tests that check
        readiness handling patch pods/status themselves.
        """

        async def kubelet(s: ApiServer) -> None:
            position = s.log_dropped[PODS] + len(s.log[PODS])
            while True:
                idx = position - s.log_dropped[PODS]
                pending = s.log[PODS][max(idx, 0) :]
                position += len(pending)
                for e in pending:
                    if e.type == "ADDED":
                        meta = e.obj["metadata"]
                        asyncio.get_running_loop().call_later(
                            delay, self._mark_ready, s, meta.get("namespace"), meta["name"], meta["uid"]
                        )
                async with s.changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(s.changed.wait(), 1.0)

        def spawn(s: ApiServer) -> None:
            self._kubelet = asyncio.get_running_loop().create_task(kubelet(s))

        self.call(spawn)

    @staticmethod
    def _mark_ready(s: ApiServer, namespace: str | None, name: str, uid: str) -> None:
        obj = s.store[PODS].get((namespace, name))
        if obj is not None and obj["metadata"]["uid"] == uid:
            s.patch(PODS, namespace, name, pod_status(True), "application/merge-patch+json", subresource="status")

    def timeline(self, key: ResKey) -> list[tuple[int, str, JSON]]:
        """Every watch event of a resource so far: (resourceVersion, type, object)."""
        return self.call(lambda s: [(e.rv, e.type, e.obj) for e in s.log[key]])

    # -- HTTP client ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
    ) -> Any:
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            payload = json.loads(e.read() or b"{}")
            raise ApiError(
                e.code, payload.get("reason", ""), payload.get("message", ""), payload.get("details")
            ) from None

    @staticmethod
    def path(key: ResKey, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        group, version, plural = key
        return resource_path(f"{group}/{version}" if group else version, plural, namespace, name, sub)

    def create(self, key: ResKey, obj: JSON, namespace: str | None = None) -> JSON:
        ns = namespace or obj.get("metadata", {}).get("namespace")
        return dict(self.request("POST", self.path(key, ns), obj))

    def get(self, key: ResKey, namespace: str | None, name: str) -> JSON:
        return dict(self.request("GET", self.path(key, namespace, name)))

    def try_get(self, key: ResKey, namespace: str | None, name: str) -> JSON | None:
        try:
            return self.get(key, namespace, name)
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def list(self, key: ResKey, namespace: str | None = None, selector: str | None = None) -> list[JSON]:
        query = {"labelSelector": selector} if selector else None
        return list(self.request("GET", self.path(key, namespace), query=query)["items"])

    def patch(
        self,
        key: ResKey,
        namespace: str | None,
        name: str,
        patch: Any,
        sub: str | None = None,
        content_type: str = "application/merge-patch+json",
    ) -> JSON:
        return dict(self.request("PATCH", self.path(key, namespace, name, sub), patch, content_type))

    def delete(self, key: ResKey, namespace: str | None, name: str, options: JSON | None = None) -> JSON:
        """DELETE with optional DeleteOptions (e.g. gracePeriodSeconds, preconditions)."""
        return dict(self.request("DELETE", self.path(key, namespace, name), options))

    def apply_crd(self, crd: JSON) -> JSON:
        return self.create(CRDS, crd)

    def set_pod_ready(self, namespace: str, name: str, ready: bool = True) -> JSON:
        """What a kubelet reports once every container runs and passes its readiness probe."""
        return self.patch(PODS, namespace, name, pod_status(ready), sub="status")

    def wait_for[T](
        self, probe: Callable[[], T | None], timeout: float = 20, interval: float = 0.1, what: str = "condition"
    ) -> T:
        """`svoe.testing.waiting.wait_for`, polling every 0.1 s by default."""
        return wait_for(probe, timeout, what, interval)


def pod_status(ready: bool) -> JSON:
    now = now_rfc3339()
    flag = "True" if ready else "False"
    return {
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
                {"type": "Ready", "status": flag, "lastTransitionTime": now},
            ],
            "startTime": now,
        }
    }
