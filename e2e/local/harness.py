"""The local e2e harness: the pieces the tests start and the ways they look at the result.

- `KubeEmulator` (svoe.testing.kube, with graceful pod deletion on), the real
  operator process (`svoe.testing.operator.OperatorProcess`, as in the operator tests), kubectl against both;
- a moto server (S3 + Glue) in its own process;
- the exchange: `ReplayServer` (what `svoe replay serve` runs) on a thread of the test run;
- the `PodRunner`, the stand-in kubelet (test infrastructure, see pod_runner.py);
- readers: lake counts (`svoe lake stats --json`), what each pod's collector counted (its
  Prometheus multiprocess files, which outlive the processes), the API's watch timeline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from e2e.local.pod_runner import PodSandbox
from svoe.api.contract import FEED_CA_FILE
from svoe.net import free_port
from svoe.replay import ReplayServer, capture_subscription, reference_counts
from svoe.testing.kube import CONFIGMAPS, PODS, KubeEmulator
from svoe.testing.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = Path(os.environ.get("SVOE_CAPTURES", ROOT.parent / "shared" / "captures")).resolve()
EXCHANGE = "BINANCE_FUTURES"  # every captured symbol has every channel: each pod gets traffic
NAMESPACE = "e2e"
BUCKET = "svoe-e2e"
# The exchange's CA reaches the feed pods as the operator's CA ConfigMap (SVOE_FEED_CA_CONFIGMAP),
# mounted at FEED_CA_FILE, as in a user's cluster (and in the kind e2e).
CA_CONFIGMAP = "exchange-ca"
EXCHANGE_CA = FEED_CA_FILE
SVOE = [str(Path(sys.executable).parent / "svoe")]
KUBECTL = shutil.which("kubectl")

Counts = dict[str, dict[str, int]]  # channel -> symbol -> events


# -- kubectl ----------------------------------------------------------------------------------------


class Kubectl:
    def __init__(self, kube: KubeEmulator, namespace: str = NAMESPACE) -> None:
        if KUBECTL is None:
            raise RuntimeError("kubectl is not installed; the e2e drives the cluster with it")
        self.kube = kube
        self.namespace = namespace

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        res = subprocess.run(
            [KUBECTL, "-n", self.namespace, *args],
            env=self.kube.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
        return res

    def apply(self, doc: Mapping[str, Any]) -> str:
        return self("apply", "-f", "-", stdin=yaml.safe_dump(dict(doc))).stdout

    def get_df(self) -> dict[str, dict[str, str]]:
        """`kubectl get df` as {name: {COLUMN: value}}."""
        lines = self("get", "df").stdout.splitlines()
        if not lines:
            return {}
        # kubectl aligns every cell under its header, and a header (LAST EVENT) may hold a space.
        starts = [m.start() for m in re.finditer(r"(?:(?<=\s{2})|^)\S", lines[0])]
        header = [lines[0][a:b].strip() for a, b in itertools.pairwise([*starts, None])]
        rows = [[line[a:b].strip() for a, b in itertools.pairwise([*starts, None])] for line in lines[1:]]
        return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


# -- moto -------------------------------------------------------------------------------------------


class MotoServer:
    """moto in server mode (S3 + Glue over real HTTP), in its own process."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def up() -> bool:
            try:
                with urllib.request.urlopen(self.url + "/moto-api/", timeout=1):
                    return True
            except OSError:
                return self.proc.poll() is not None  # exited: stop waiting, fail below

        wait_for(up, 30, "the moto server")
        if self.proc.poll() is not None:
            raise RuntimeError(f"moto exited with {self.proc.returncode}; see {log}")

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to use this moto as S3 and Glue (awswrangler honours WR_*)."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.url,
            "WR_S3_ENDPOINT_URL": self.url,
            "WR_GLUE_ENDPOINT_URL": self.url,
            "AWS_MAX_ATTEMPTS": "3",
        }

    def client(self, service: str) -> Any:
        import boto3  # type: ignore[import-untyped]

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


# -- the exchange -----------------------------------------------------------------------------------


class Exchange:
    """The replay exchange (`ReplayServer`, as `svoe replay serve` runs it) on its own event loop
    thread, so that the tests can read what it sent and what it still holds."""

    def __init__(self, speed: float, clients: int = 1) -> None:
        self.server = ReplayServer(str(CAPTURES), EXCHANGE, speed=speed, clients=clients)
        self.total = self.server.total_messages  # messages in the capture's websocket streams
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="replay-exchange", daemon=True)
        self._thread.start()
        self._call(self.server.start())

    def _call[T](self, coro: Any) -> T:
        result: T = asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)
        return result

    @property
    def endpoints(self) -> dict[str, str]:
        return {"websocket": self.server.ws_base, "rest": self.server.rest_base, "caFile": EXCHANGE_CA}

    def stats(self) -> dict[str, Any]:
        async def get() -> dict[str, Any]:
            return self.server.stats()

        return self._call(get())

    def stop(self) -> None:
        self._call(self.server.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(20)


def start_exchange(kube: KubeEmulator, speed: float, clients: int = 1) -> Exchange:
    """A fresh replay, and its CA in the operator's CA ConfigMap for the pods started after this."""
    ex = Exchange(speed, clients)
    data = {"ca.crt": Path(ex.server.ca_file).read_text()}
    if kube.try_get(CONFIGMAPS, NAMESPACE, CA_CONFIGMAP) is None:
        kube.create(
            CONFIGMAPS,
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CA_CONFIGMAP}, "data": data},
            NAMESPACE,
        )
    else:
        kube.patch(CONFIGMAPS, NAMESPACE, CA_CONFIGMAP, {"data": data})
    return ex


def stream_names(symbol: str) -> dict[str, str]:
    """Binance Futures stream name of each channel of a symbol, as cryptofeed subscribes them."""
    base = symbol.removesuffix("-PERP").replace("-", "").lower()
    return {
        "trades": f"{base}@aggTrade",
        "ticker": f"{base}@bookTicker",
        "candles": f"{base}@kline_1m",
        "l2_book": f"{base}@depth@100ms",
    }


# One captured message is one event for these channels (a book update may be skipped as older than
# the snapshot, and snapshots are events without a message).
ONE_TO_ONE = ("trades", "ticker", "candles")


# -- manifests and expectations -----------------------------------------------------------------------


def capture_symbols() -> tuple[list[str], list[str]]:
    """Channels and symbols of the capture's subscription, in its order."""
    sub = capture_subscription(str(CAPTURES), EXCHANGE)
    return list(sub), list(dict.fromkeys(s for syms in sub.values() for s in syms))


def reference() -> dict[str, int]:
    """The captures README's reference counts for the exchange (channels with events)."""
    return {ch: n for ch, n in reference_counts(str(CAPTURES))[EXCHANGE].items() if n}


def datafeed(name: str, symbols: list[str], exchange: Exchange, lake: str, **storage: Any) -> dict[str, Any]:
    channels, _ = capture_symbols()
    return {
        "apiVersion": "svoe.io/v1alpha1",
        "kind": "DataFeed",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "exchange": EXCHANGE,
            "channels": channels,
            "symbols": symbols,
            "sharding": {"maxSymbolsPerPod": 2},
            "storage": {"lake": lake, **storage},
            "endpoints": exchange.endpoints,
        },
    }


# -- reading results ------------------------------------------------------------------------------------


def svoe_json(*args: str, env: Mapping[str, str]) -> Any:
    """`svoe ARGS --json`, parsed; an AssertionError with its stderr if it fails."""
    res = subprocess.run(
        [*SVOE, *args, "--json"], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )
    if res.returncode != 0:
        raise AssertionError(f"svoe {' '.join(args[:2])} failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout)


def lake_counts(url: str, env: Mapping[str, str], raw: bool = False) -> Counts:
    """`svoe lake stats URL --json` for the e2e's exchange: channel -> symbol -> events (rows: raw)."""
    counts: dict[str, Counts] = svoe_json("lake", "stats", url, *(["--raw"] if raw else []), env=env)
    return counts.get(EXCHANGE, {})


def view_snapshots(url: str, env: Mapping[str, str]) -> dict[str, int]:
    """l2_book snapshot rows per symbol in the exactly-once view (`svoe lake sql`)."""
    query = f"SELECT symbol, count(*) AS n FROM l2_book WHERE snapshot AND exchange = '{EXCHANGE}' GROUP BY symbol"
    return {row["symbol"]: int(row["n"]) for row in svoe_json("lake", "sql", url, query, env=env)}


def totals(counts: Counts) -> dict[str, int]:
    return {ch: sum(syms.values()) for ch, syms in counts.items() if sum(syms.values())}


def of_symbols(counts: Counts, symbols: set[str]) -> Counts:
    out = {ch: {s: n for s, n in syms.items() if s in symbols and n} for ch, syms in counts.items()}
    return {ch: syms for ch, syms in out.items() if syms}


def merge(parts: list[Counts]) -> Counts:
    out: Counts = {}
    for part in parts:
        for ch, syms in part.items():
            for s, n in syms.items():
                out.setdefault(ch, {})
                out[ch][s] = out[ch].get(s, 0) + n
    return of_symbols(out, {s for syms in out.values() for s in syms})


def collected(sb: PodSandbox) -> Counts:
    """svoe_events_total of a pod's collector, per channel and symbol, from its metrics volume.

    prometheus-client's multiprocess files stay after the processes exit, so this is the final
    count of what the collector handed to Redis, read the way the pod's /metrics merges it.
    """
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(sb.volume("metrics")))  # type: ignore[no-untyped-call]
    out: Counts = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "svoe_events_total" and sample.value:
                ch, sym = sample.labels["channel"], sample.labels["symbol"]
                out.setdefault(ch, {})[sym] = out.get(ch, {}).get(sym, 0) + int(sample.value)
    return out


def pod_events(kube: KubeEmulator, name: str) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """The API's watch events of one pod: (resourceVersion, type, object)."""
    for rv, typ, obj in kube.timeline(PODS):
        if obj["metadata"]["name"] == name and obj["metadata"].get("namespace") == NAMESPACE:
            yield rv, typ, obj


def first_rv(kube: KubeEmulator, name: str, pred: Callable[[dict[str, Any]], bool]) -> int | None:
    return next((rv for rv, _, obj in pod_events(kube, name) if pred(obj)), None)


def is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in (pod.get("status") or {}).get("conditions", [])
    )


def is_deleting(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))
