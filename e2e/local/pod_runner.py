"""TEST INFRASTRUCTURE, not part of svoe: a stand-in kubelet that runs the Pods of the API emulator
as local processes, so that the e2e sees the operator's pods really work, not just render.

One node, no containers: every container of a Pod is a child process of the test run, with the
container's own command, args and env. What a container runtime would isolate is mapped instead,
and each mapping is documented here and in e2e/README.md:

- Volumes: every volume of the pod is a directory under the pod's sandbox (`ROOT/<uid[:8]>/<name>`):
  emptyDirs start empty, configMap volumes get the ConfigMap's keys (or `items`) as files, read from
  the API like a kubelet does. Other volume types are refused (the pod fails to start).
- Paths: a mount path means the volume's directory. Every value the processes are given is
  rewritten, without a chroot: command and args, env values and workingDir, exec probe and preStop
  commands, and the ConfigMap files' contents (YAML files: every string value; other files: every
  whitespace-separated token). A value is rewritten when it is a mount path, lies below one, or is
  a `scheme://` URL whose path does (`unix:///var/run/svoe/redis.sock`). Paths the image provides
  (`image_files`, e.g. a CA bundle baked into the e2e image in the kind run) are mapped the same
  way, after the mounts. Any other absolute path is the host's.
- Network: a pod's containers share one network namespace, so they reach each other on 127.0.0.1;
  several local pods would collide on the same ports. Each containerPort of a pod gets a free host
  port. Probes and hooks use the mapped ports; exec commands get `127.0.0.1:PORT` and
  `localhost:PORT` rewritten. Two rewrites are svoe-specific: a container whose command is `svoe`
  gets the value of its `--health-port` flag (a containerPort, svoe/api/contract.py) mapped and
  its `--health-host` set to 127.0.0.1, and a DataFeed manifest in a ConfigMap gets `spec.live.port` mapped
  (the live port is a manifest value, not a flag). The emulator's pod proxy (how the
  operator reads a collector's /stats) asks the runner where a pod's port listens (`address`).
- Environment: the container's env (values and `fieldRef` metadata.name/namespace), over what the
  image sets (PATH with this virtualenv's bin first, XDG_CACHE_HOME=/tmp/cache, PYTHONUNBUFFERED=1),
  plus `node_env`: what the node or an admission webhook would inject (the e2e injects the
  AWS_* variables of the moto server, as the pod-identity webhook injects credentials on EKS).
- Scheduling: the node has `node_labels` and `node_taints`; a pod whose nodeSelector does not
  match, or that does not tolerate a NoSchedule taint, stays Pending, as with no fitting node.
- Status, as a kubelet reports it: PodScheduled, then phase Running with containerStatuses once the
  processes run, and Ready/ContainersReady once every container's startup and readiness probes
  pass (httpGet and exec probes; `periodSeconds` is shortened to `probe_interval`).
- Deletion: with the emulator's graceful pod deletion, a deleted pod gets a deletionTimestamp; then
  every container stops at once, as a kubelet stops them: its preStop hook runs first if it has one,
  then SIGTERM; whatever still runs when terminationGracePeriodSeconds is over gets SIGKILL (its
  whole process group). Once all processes have exited, the final containerStatuses are reported and
  the pod is deleted with gracePeriodSeconds=0, which removes it from the API.

Faults: `lose_node(sandbox)` does what losing the node does to a pod: SIGKILL to every process,
its volumes deleted, and the pod reported Failed (NodeLost); deleting it then removes it at once.

Not emulated (the tests do not rely on it): restarts (restartPolicy; an exited container stays
exited and is recorded in `failures`), liveness probes, resource limits and the read-only root
filesystem, users and capabilities, image pulls, init and sidecar containers, subPath mounts,
Secrets, hostPath and projected volumes, Services and DNS.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from svoe.api.timestamps import now_rfc3339
from svoe.net import free_port
from svoe.testing.kube import CONFIGMAPS, PODS, ApiError, KubeEmulator

JSON = dict[str, Any]
VENV_BIN = str(Path(sys.executable).parent)
# What the feed pod image sets (Dockerfile, stage runtime); the container's env comes on top.
IMAGE_ENV = {
    "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "XDG_CACHE_HOME": "/tmp/cache",
    "LANG": "C.UTF-8",
}


class PathMap:
    """Container paths -> host paths: the mounts of a container, then the files of its image."""

    def __init__(self, mounts: Mapping[str, Path], image_files: Mapping[str, Path]) -> None:
        # Longest first, so /var/run/svoe/metrics wins over /var/run/svoe.
        self.entries = sorted(
            [(p.rstrip("/") or "/", h) for p, h in mounts.items()]
            + [(p.rstrip("/"), h) for p, h in image_files.items() if p not in mounts],
            key=lambda e: len(e[0]),
            reverse=True,
        )

    def path(self, value: str) -> str:
        for container_path, host in self.entries:
            if value == container_path:
                return str(host)
            if value.startswith(container_path + "/"):
                return str(host) + value[len(container_path) :]
        return value

    def value(self, value: str) -> str:
        """A path, or a `scheme://path` URL, mapped; anything else unchanged."""
        scheme, sep, rest = value.partition("://")
        if sep and rest.startswith("/") and re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
            return f"{scheme}://{self.path(rest)}"
        return self.path(value) if value.startswith("/") else value

    def tokens(self, text: str) -> str:
        """Every whitespace-separated token of a text file (e.g. redis.conf) mapped."""
        return re.sub(r"\S+", lambda m: self.value(m.group(0)), text)

    def document(self, text: str) -> str:
        """A YAML file: every string value mapped; other files token by token."""
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            return self.tokens(text)
        if not isinstance(doc, dict | list):
            return self.tokens(text)

        def walk(node: Any) -> Any:
            if isinstance(node, dict):
                return {k: walk(v) for k, v in node.items()}
            if isinstance(node, list):
                return [walk(v) for v in node]
            return self.value(node) if isinstance(node, str) else node

        return str(yaml.safe_dump(walk(doc), sort_keys=False))


def map_ports(text: str, ports: Mapping[int, int]) -> str:
    """`127.0.0.1:PORT` / `localhost:PORT` of a pod's own ports -> the mapped host ports."""

    def sub(m: re.Match[str]) -> str:
        port = int(m.group(2))
        return f"{m.group(1)}:{ports.get(port, port)}"

    return re.sub(r"\b(127\.0\.0\.1|localhost):(\d+)\b", sub, text)


def map_health_flags(argv: list[str], ports: Mapping[int, int]) -> list[str]:
    """A `svoe` command line's `--health-port P` (P a containerPort) -> the mapped host port, and
    `--health-host` (the feed containers pass it, svoe/api/contract.py) -> 127.0.0.1: a pod's
    port bound on every host interface would be reachable from outside the test."""
    if "--health-port" not in argv:
        raise ValueError("a svoe container with an HTTP probe must pass --health-port (svoe/api/contract.py)")
    out = list(argv)
    for i, flag in enumerate(out[:-1]):
        if flag == "--health-port":
            out[i + 1] = str(ports.get(int(out[i + 1]), int(out[i + 1])))
        elif flag == "--health-host":
            out[i + 1] = "127.0.0.1"
    return out


@dataclass
class ContainerRun:
    """One container of a pod: a local process."""

    name: str
    spec: JSON
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float | None = None
    term_sent_at: float | None = None
    exited_at: float | None = None
    exit_code: int | None = None
    killed: bool = False
    # While the pod terminates: the last time the container's HTTP health endpoint still answered
    # (bookkeeping for the tests, e.g. that a preStop hook waited for another container).
    served_until: float | None = None
    started: bool = False  # startup probe passed (or none)
    ready: bool = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class PodSandbox:
    """Everything the runner keeps of one pod (also after it is gone, for the assertions)."""

    namespace: str
    name: str
    uid: str
    root: Path
    volumes: dict[str, Path] = field(default_factory=dict)
    ports: dict[int, int] = field(default_factory=dict)
    containers: dict[str, ContainerRun] = field(default_factory=dict)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    pending_reason: str | None = None
    ready: bool = False
    terminating: bool = False
    lost: bool = False  # its node was lost (`PodRunner.lose_node`)
    deleted: bool = False  # gone from the API (deleted by the runner after its processes exited)
    grace_seconds: float | None = None
    start_time: str | None = None
    # Held while containers start and while they stop: a deletion waits for a start in progress.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, what: str) -> None:
        self.timeline.append((time.monotonic(), what))

    def at(self, what: str) -> float | None:
        return next((t for t, w in self.timeline if w == what), None)

    def volume(self, name: str) -> Path:
        return self.volumes[name]

    def port(self, container_port: int) -> int:
        return self.ports[container_port]


class PodRunner:
    """Watches every Pod of the emulator and runs it (see the module docstring)."""

    def __init__(
        self,
        kube: KubeEmulator,
        root: Path,
        *,
        node_env: Mapping[str, str] | None = None,
        image_files: Mapping[str, Path] | None = None,
        node_labels: Mapping[str, str] | None = None,
        node_taints: Sequence[JSON] = (),
        probe_interval: float = 0.5,
    ) -> None:
        self.kube = kube
        self.root = root
        self.node_env = dict(node_env or {})
        self.image_files = dict(image_files or {})
        self.node_labels = dict(node_labels or {})
        self.node_name = self.node_labels.get("kubernetes.io/hostname", "e2e-node")
        self.node_taints = list(node_taints)
        self.probe_interval = probe_interval
        self.sandboxes: dict[str, PodSandbox] = {}  # by uid
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # The API server's pod proxy reaches a pod's port where this node maps it.
        self.kube.call(lambda s: setattr(s, "pod_address", self.address))
        self._spawn(self._watch, "pod-runner-watch")

    def address(self, namespace: str | None, name: str, port: int) -> tuple[str, int] | None:
        live = [
            sb for sb in self.pods() if (sb.namespace, sb.name) == (namespace, name) and not (sb.deleted or sb.lost)
        ]
        return ("127.0.0.1", live[-1].ports[port]) if live and port in live[-1].ports else None

    def lose_node(self, sb: PodSandbox) -> None:
        """What losing the node does to a pod on it: every process dies at once (SIGKILL, no preStop,
        no drain), the emptyDirs are gone with the disk (Redis' AOF too), and the node lifecycle
        controller reports the pod Failed, reason NodeLost. Deleting it afterwards removes it at once,
        as the pod garbage collector does for pods of a node that is gone."""
        sb.lost = True  # first: the probe loop must not count the deaths as container failures
        sb.note("node lost")
        for c in sb.containers.values():
            self._kill(c)
        for c in sb.containers.values():
            self._wait_or_kill(c, time.monotonic() + 10)
        for volume in sb.volumes.values():
            shutil.rmtree(volume, ignore_errors=True)
        message = f"Node {self.node_name} which was running pod {sb.name} is unresponsive"
        status = {"phase": "Failed", "reason": "NodeLost", "message": message}
        self._patch_status(sb, {**status, "conditions": [_condition("Ready", False, "NodeLost", message)]})

    def stop(self) -> None:
        """Tear down: stop every pod still running (SIGTERM, then SIGKILL after 20s)."""
        self._stop.set()
        for sb in list(self.sandboxes.values()):
            for c in sb.containers.values():
                if c.running and c.proc is not None:
                    with contextlib.suppress(ProcessLookupError):
                        c.proc.send_signal(signal.SIGTERM)
            for c in sb.containers.values():
                self._wait_or_kill(c, time.monotonic() + 20)

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        threading.Thread(target=target, args=args, name=name, daemon=True).start()

    # -- queries for the tests ---------------------------------------------------------------------

    def pods(self, name_prefix: str = "") -> list[PodSandbox]:
        with self._lock:
            return [sb for sb in self.sandboxes.values() if sb.name.startswith(name_prefix)]

    def by_name(self, name: str) -> PodSandbox:
        matches = [sb for sb in self.pods() if sb.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} pods named {name} ran here")
        return matches[0]

    def failures(self) -> list[str]:
        return [f"{sb.name}: {f}" for sb in self.pods() for f in sb.failures]

    def logs(self, sb: PodSandbox, tail: int = 4000) -> str:
        return "\n".join(f"--- {sb.name}/{c.name} ---\n{c.log()[-tail:]}" for c in sb.containers.values())

    # -- the watch ---------------------------------------------------------------------------------

    def _watch(self) -> None:
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    listing = self.kube.request("GET", self.kube.path(PODS))
                    for pod in listing["items"]:
                        self._on_event("ADDED", pod)
                    rv = str(listing["metadata"]["resourceVersion"])
                query = urllib.parse.urlencode(
                    {"watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "30"}
                )
                with urllib.request.urlopen(f"{self.kube.url}{self.kube.path(PODS)}?{query}", timeout=40) as resp:
                    for line in resp:
                        if self._stop.is_set():
                            return
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            rv = None  # expired: list again
                            break
                        rv = str(event["object"]["metadata"]["resourceVersion"])
                        if event["type"] != "BOOKMARK":
                            self._on_event(event["type"], event["object"])
            except (OSError, ValueError, ApiError):
                if not self._stop.is_set():
                    time.sleep(0.2)

    def _on_event(self, typ: str, pod: JSON) -> None:
        meta = pod["metadata"]
        uid = str(meta["uid"])
        with self._lock:
            sb = self.sandboxes.get(uid)
            if sb is None:
                if typ == "DELETED" or meta.get("deletionTimestamp"):
                    return  # never ran here
                sb = PodSandbox(str(meta["namespace"]), str(meta["name"]), uid, self.root / uid[:8])
                self.sandboxes[uid] = sb
                sb.note("seen")
                self._spawn(self._run_pod, f"pod-{sb.name}", sb, pod)
                return
        if typ == "DELETED":
            sb.deleted = True
            if any(c.running for c in sb.containers.values()) and not sb.terminating:
                # Removed without a grace period (forced): the containers are killed at once.
                sb.terminating = True
                sb.note("force-deleted")
                for c in sb.containers.values():
                    self._kill(c)
        elif meta.get("deletionTimestamp") and not sb.terminating:
            sb.terminating = True
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            sb.grace_seconds = float(grace)
            sb.note("terminating")
            self._spawn(self._terminate, f"stop-{sb.name}", sb)

    # -- starting a pod ------------------------------------------------------------------------------

    def _schedulable(self, spec: JSON) -> str | None:
        selector = spec.get("nodeSelector") or {}
        missing = {k: v for k, v in selector.items() if self.node_labels.get(k) != v}
        if missing:
            return f"no node matches nodeSelector {missing}"
        for taint in self.node_taints:
            if taint.get("effect") not in ("NoSchedule", "NoExecute"):
                continue
            if not any(_tolerates(t, taint) for t in spec.get("tolerations") or []):
                return f"the node's taint {taint} is not tolerated"
        return None

    def _run_pod(self, sb: PodSandbox, pod: JSON) -> None:
        spec = pod["spec"]
        reason = self._schedulable(spec)
        if reason is not None:
            sb.pending_reason = reason
            sb.note("unschedulable")
            self._patch_status(sb, {"conditions": [_condition("PodScheduled", False, "Unschedulable", reason)]})
            return
        try:
            self._prepare(sb, pod)
        except Exception as err:  # a pod the runner cannot start is a test failure, reported in status too
            sb.failures.append(f"cannot start: {err!r}")
            sb.note("failed")
            self._patch_status(sb, {"phase": "Failed", "reason": "RunnerError", "message": str(err)[:500]})
            return
        with sb.lock:
            if sb.terminating:
                return
            sb.start_time = now_rfc3339()
            for c in sb.containers.values():
                self._start_container(sb, c)
            sb.note("started")
        self._report(sb)
        self._probe_loop(sb)

    def _prepare(self, sb: PodSandbox, pod: JSON) -> None:
        spec = pod["spec"]
        sb.root.mkdir(parents=True, exist_ok=True)
        (sb.root / "logs").mkdir(exist_ok=True)
        for c in spec["containers"]:
            for p in c.get("ports") or []:
                sb.ports.setdefault(int(p["containerPort"]), free_port())
        # One path map for the ConfigMap files (they are the same file in every container).
        pod_mounts: dict[str, Path] = {}
        for vol in spec.get("volumes") or []:
            if not ({"emptyDir", "configMap"} & vol.keys()):
                raise ValueError(f"volume {vol['name']}: only emptyDir and configMap volumes are emulated")
            sb.volumes[vol["name"]] = sb.root / vol["name"]
            sb.volumes[vol["name"]].mkdir(exist_ok=True)
        for c in spec["containers"]:
            for m in c.get("volumeMounts") or []:
                if m.get("subPath"):
                    raise ValueError(f"container {c['name']}: subPath mounts are not emulated")
                host = sb.volumes[m["name"]]
                if pod_mounts.get(m["mountPath"], host) != host:
                    raise ValueError(f"{m['mountPath']} is mounted from different volumes in different containers")
                pod_mounts[m["mountPath"]] = host
        pod_paths = PathMap(pod_mounts, self.image_files)
        for vol in spec.get("volumes") or []:
            if "configMap" in vol:
                self._write_configmap(sb, vol, pod_paths)
        env_from_meta = {"metadata.name": sb.name, "metadata.namespace": sb.namespace, "metadata.uid": sb.uid}
        for c in spec["containers"]:
            mounts = {m["mountPath"]: sb.volumes[m["name"]] for m in c.get("volumeMounts") or []}
            paths = PathMap(mounts, self.image_files)
            argv = [paths.value(a) for a in [*(c.get("command") or []), *(c.get("args") or [])]]
            if not argv:
                raise ValueError(f"container {c['name']}: no command (image entry points are not emulated)")
            if Path(argv[0]).name == "svoe" and _http_probe_port(c) is not None:
                argv = map_health_flags(argv, sb.ports)
            exe = shutil.which(argv[0], path=IMAGE_ENV["PATH"])
            if exe is None:
                raise ValueError(f"container {c['name']}: {argv[0]} is not installed on this machine")
            argv[0] = exe
            env = {k: paths.value(v) for k, v in IMAGE_ENV.items() if k != "PATH"}
            env["PATH"] = IMAGE_ENV["PATH"]
            env["HOSTNAME"] = sb.name
            env["HOME"] = str(sb.root / "home")
            env.update(self.node_env)
            for e in c.get("env") or []:
                if "value" in e:
                    env[e["name"]] = paths.value(str(e["value"]))
                elif (ref := (e.get("valueFrom") or {}).get("fieldRef")) and ref.get("fieldPath") in env_from_meta:
                    env[e["name"]] = env_from_meta[ref["fieldPath"]]
                else:
                    raise ValueError(f"container {c['name']}: env {e['name']} uses an unsupported valueFrom")
            workdir = c.get("workingDir")
            cwd = Path(paths.value(workdir)) if workdir else sb.root / "home"
            if not str(cwd).startswith(str(sb.root)):
                cwd = sb.root / "rootfs" / str(cwd).lstrip("/")
            cwd.mkdir(parents=True, exist_ok=True)
            (sb.root / "home").mkdir(exist_ok=True)
            sb.containers[c["name"]] = ContainerRun(c["name"], c, argv, env, cwd, sb.root / "logs" / f"{c['name']}.log")

    def _write_configmap(self, sb: PodSandbox, vol: JSON, paths: PathMap) -> None:
        ref = vol["configMap"]
        deadline = time.monotonic() + 60
        while True:  # a kubelet waits (ContainerCreating) until the ConfigMap exists
            cm = self.kube.try_get(CONFIGMAPS, sb.namespace, ref["name"])
            if cm is not None or sb.terminating:
                break
            if time.monotonic() > deadline:
                raise ValueError(f"configmap {ref['name']} does not exist")
            time.sleep(0.2)
        if cm is None:
            return
        data: dict[str, str] = cm.get("data") or {}
        items = ref.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            text = paths.document(data[item["key"]])
            text = _map_live_port(text, sb.ports)
            target = sb.volumes[vol["name"]] / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)

    def _start_container(self, sb: PodSandbox, c: ContainerRun) -> None:
        with c.log_path.open("ab") as log:
            # Its own session: signals to the test run do not reach it, and SIGKILL takes the whole
            # process group (e.g. the aggregator's block writer process), as a container kill does.
            c.proc = subprocess.Popen(
                c.argv, env=c.env, cwd=c.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        c.started_at = time.monotonic()
        c.started = not c.spec.get("startupProbe")
        sb.note(f"started {c.name}")

    # -- probes and status ---------------------------------------------------------------------------

    def _probe_loop(self, sb: PodSandbox) -> None:
        while not sb.terminating and not sb.lost and not self._stop.is_set():
            changed = False
            for c in sb.containers.values():
                if not c.running:
                    if c.exit_code is None and c.proc is not None:
                        c.exit_code = c.proc.returncode
                        c.exited_at = time.monotonic()
                        if not sb.terminating:
                            sb.failures.append(f"container {c.name} exited with {c.exit_code} while running")
                            sb.note(f"exited {c.name}")
                    if c.ready:
                        c.ready, changed = False, True
                    continue
                if not c.started:
                    c.started = self._probe(sb, c, c.spec["startupProbe"])
                    changed |= c.started
                    continue
                probe = c.spec.get("readinessProbe")
                ready = True if probe is None else self._probe(sb, c, probe)
                if ready != c.ready:
                    c.ready, changed = ready, True
            pod_ready = all(c.ready for c in sb.containers.values())
            if sb.terminating or sb.lost:
                break
            if pod_ready != sb.ready or changed:
                sb.ready = pod_ready
                sb.note("ready" if pod_ready else "not ready")
                self._report(sb)
            time.sleep(self.probe_interval)

    def _probe(self, sb: PodSandbox, c: ContainerRun, probe: JSON) -> bool:
        timeout = float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = _resolve_port(c.spec, get["port"])
            url = f"http://127.0.0.1:{sb.ports.get(port, port)}{get.get('path', '/')}"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as r:
                    return bool(200 <= r.status < 400)
            except (urllib.error.URLError, OSError):
                return False
        if "exec" in probe:
            try:
                return self._exec(sb, c, probe["exec"]["command"], timeout).returncode == 0
            except subprocess.TimeoutExpired:
                return False
        raise ValueError(f"container {c.name}: probe {probe} is not emulated")

    def _exec(
        self, sb: PodSandbox, c: ContainerRun, command: list[str], timeout: float
    ) -> subprocess.CompletedProcess[bytes]:
        mounts = {m["mountPath"]: sb.volumes[m["name"]] for m in c.spec.get("volumeMounts") or []}
        paths = PathMap(mounts, self.image_files)
        argv = [map_ports(paths.value(a), sb.ports) for a in command]
        return subprocess.run(
            argv, env=c.env, cwd=c.cwd, capture_output=True, timeout=timeout, check=False, start_new_session=True
        )

    def _report(self, sb: PodSandbox) -> None:
        if sb.lost:
            return  # a lost node's kubelet reports nothing; the NodeLost status stands
        now = now_rfc3339()
        statuses = []
        for c in sb.containers.values():
            state: JSON
            if c.exit_code is not None:
                reason = "Completed" if c.exit_code == 0 else "Error"
                state = {"terminated": {"exitCode": c.exit_code, "reason": reason}}
            else:
                state = {"running": {"startedAt": now}}
            statuses.append(
                {
                    "name": c.name,
                    "image": c.spec.get("image", ""),
                    "ready": c.ready,
                    "started": c.started and c.exit_code is None,
                    "restartCount": 0,
                    "state": state,
                }
            )
        ready = sb.ready and not sb.terminating
        status: JSON = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "conditions": [
                _condition("PodScheduled", True),
                _condition("Initialized", True),
                _condition("ContainersReady", ready),
                _condition("Ready", ready),
            ],
            "containerStatuses": statuses,
        }
        if sb.start_time is not None:
            status["startTime"] = sb.start_time
        self._patch_status(sb, status)

    def _patch_status(self, sb: PodSandbox, status: JSON) -> None:
        try:
            self.kube.patch(PODS, sb.namespace, sb.name, {"status": status}, sub="status")
        except ApiError as e:
            if e.code != 404:
                raise

    # -- stopping a pod ------------------------------------------------------------------------------

    def _terminate(self, sb: PodSandbox) -> None:
        grace = sb.grace_seconds if sb.grace_seconds is not None else 30.0
        deadline = time.monotonic() + grace
        with sb.lock:  # containers being started are all started first; none starts after this
            threads = [
                threading.Thread(target=self._stop_container, args=(sb, c, deadline), daemon=True)
                for c in sb.containers.values()
            ]
            threads += [
                threading.Thread(target=self._watch_health, args=(sb, c), daemon=True)
                for c in sb.containers.values()
                if _alive_check(c.spec) is not None
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        sb.ready = False
        sb.note("stopped")
        if not sb.deleted:
            self._report(sb)
            try:
                options = {"gracePeriodSeconds": 0, "preconditions": {"uid": sb.uid}}
                self.kube.delete(PODS, sb.namespace, sb.name, options)
            except ApiError as e:
                if e.code not in (404, 409):
                    raise
        sb.deleted = True
        sb.note("deleted")

    def _watch_health(self, sb: PodSandbox, c: ContainerRun) -> None:
        check = _alive_check(c.spec)
        assert check is not None
        port, path = check
        url = f"http://127.0.0.1:{sb.ports.get(port, port)}{path}"
        while c.running:
            try:
                with urllib.request.urlopen(url, timeout=1):
                    c.served_until = time.monotonic()
            except (urllib.error.URLError, OSError):
                return
            time.sleep(0.05)

    def _stop_container(self, sb: PodSandbox, c: ContainerRun, deadline: float) -> None:
        if c.proc is None:
            return
        pre_stop = ((c.spec.get("lifecycle") or {}).get("preStop") or {}).get("exec")
        if pre_stop and c.running:
            sb.note(f"preStop {c.name}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._exec(sb, c, pre_stop["command"], max(deadline - time.monotonic(), 0.1))
        if c.running:
            c.term_sent_at = time.monotonic()
            sb.note(f"SIGTERM {c.name}")
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGTERM)
        self._wait_or_kill(c, deadline)
        sb.note(f"exited {c.name}")

    def _wait_or_kill(self, c: ContainerRun, deadline: float) -> None:
        if c.proc is None:
            return
        try:
            c.proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            self._kill(c)
            c.proc.wait(10)
        if c.exit_code is None:
            c.exit_code = c.proc.returncode
            c.exited_at = time.monotonic()

    def _kill(self, c: ContainerRun) -> None:
        if c.proc is not None and c.proc.poll() is None:
            c.killed = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.proc.pid, signal.SIGKILL)


def _tolerates(toleration: JSON, taint: JSON) -> bool:
    if toleration.get("effect") not in (None, "", taint.get("effect")):
        return False
    if toleration.get("operator") == "Exists":
        return toleration.get("key") in (None, "", taint.get("key"))
    return bool(toleration.get("key") == taint.get("key") and toleration.get("value") == taint.get("value"))


def _condition(type_: str, status: bool, reason: str = "", message: str = "") -> JSON:
    c: JSON = {"type": type_, "status": "True" if status else "False", "lastTransitionTime": now_rfc3339()}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def _resolve_port(container: JSON, port: int | str) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"container {container['name']}: no port named {port}")


def _http_probe_port(container: JSON) -> int | None:
    for kind in ("readinessProbe", "startupProbe", "livenessProbe"):
        get = (container.get(kind) or {}).get("httpGet")
        if get:
            return _resolve_port(container, get["port"])
    return None


def _alive_check(container: JSON) -> tuple[int, str] | None:
    """Port and path of a container's HTTP liveness (or startup) probe."""
    for kind in ("livenessProbe", "startupProbe"):
        get = (container.get(kind) or {}).get("httpGet")
        if get:
            return _resolve_port(container, get["port"]), str(get.get("path", "/"))
    return None


def _map_live_port(text: str, ports: Mapping[int, int]) -> str:
    """A DataFeed manifest's spec.live.port -> the pod's mapped port (svoe-specific, see above)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if not (isinstance(doc, dict) and doc.get("kind") == "DataFeed"):
        return text
    live = (doc.get("spec") or {}).get("live") or {}
    port = live.get("port")
    if isinstance(port, int) and port in ports:
        live["port"] = ports[port]
        return str(yaml.safe_dump(doc, sort_keys=False))
    return text


def describe(sb: PodSandbox) -> str:
    """A short account of a pod's life, for failure messages."""
    t0 = sb.timeline[0][0] if sb.timeline else 0.0
    steps = ", ".join(f"{t - t0:.1f}s {w}" for t, w in sb.timeline)
    exits = ", ".join(f"{c.name}={c.exit_code}{' (killed)' if c.killed else ''}" for c in sb.containers.values())
    return f"{sb.name}: {steps}; exit codes: {exits}; ports: {sb.ports}; failures: {sb.failures or 'none'}"


__all__ = ["ContainerRun", "PathMap", "PodRunner", "PodSandbox", "describe", "map_ports"]
