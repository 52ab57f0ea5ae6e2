"""Grafana dashboards (monitoring/dashboards/*.json): PromQL checked by the real Prometheus tools.

- Syntax: every panel expression (Grafana variables substituted) as a recording rule through
  `promtool check rules`.
- Semantics of the operator panels: `promtool test rules` on synthetic operator series (two
  operator replicas exporting, one feed Ready, one Degraded).
- Live: the real Prometheus scrapes a live `svoe run --replay` and the real `svoe operator`
  (against tests/operator's Kubernetes API emulator); every panel expression and template variable
  is evaluated through Prometheus's HTTP API and must return data.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from svoe.net import free_port
from tests.ship.conftest import ROOT, tool
from tests.ship.test_alerts import EXTERNAL_METRICS, contract_metrics, referenced_metrics

DASHBOARDS = ROOT / "monitoring" / "dashboards"
# Grafana's built-in interval variables, as Grafana would expand them for a short time range.
BUILTINS = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s"}
OPERATOR_METRICS = ("svoe_datafeed_", "svoe_reconcile_")
# The featurizers' panels: fed here by synthetic series (promtool); the live test runs no featurizer.
FEATURIZER_METRICS = ("svoe_features_",)
# Labels that only exist in a cluster: namespace/pod come from Kubernetes service discovery,
# datafeed/shard from the PodMonitor's relabelling, cluster/cluster_id from Thanos' external labels.
CLUSTER_ONLY_LABELS = {"cluster", "namespace", "datafeed", "shard"}


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])


def expand(expr: str, variables: dict[str, str] | None = None) -> str:
    for k, v in BUILTINS.items():
        expr = expr.replace(k, v)
    # Template variables: "All" (allValue .*), or a chosen value.
    return re.sub(r"\$\{?(\w+)\}?", lambda m: (variables or {}).get(m.group(1), ".*"), expr)


def targets() -> list[tuple[str, str, str, str]]:
    """(dashboard, panel title, refId, expanded expr) of every panel query."""
    out = []
    for name, d in dashboards().items():
        for p in panels(d):
            for t in p.get("targets", []):
                out.append((name, p["title"], t["refId"], expand(t["expr"])))
    return out


def is_operator(expr: str) -> bool:
    return any(m in expr for m in OPERATOR_METRICS)


def test_three_dashboards_with_their_panels() -> None:
    ds = dashboards()
    assert set(ds) == {"fleet", "feed-detail", "lake"}
    assert len({d["uid"] for d in ds.values()}) == 3
    for name, d in ds.items():
        var_names = [v["name"] for v in d["templating"]["list"]]
        assert var_names[0] == "datasource"
        ids = [p["id"] for p in panels(d)]
        assert len(ids) == len(set(ids))
        for p in panels(d):
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (name, p["title"])
            assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), (name, p["title"])
            assert p.get("description"), (name, p["title"])
            used = set(re.findall(r"\$(\w+)", " ".join(t["expr"] for t in p["targets"]))) - {
                "__rate_interval",
                "__range",
                "__interval",
            }
            assert used <= set(var_names), (name, p["title"], used)

    def exprs(name: str) -> str:
        return "\n".join(t["expr"] for p in panels(ds[name]) for t in p["targets"])

    fleet = exprs("fleet")
    for needle in (
        "svoe_datafeed_ready",
        "svoe_datafeed_degraded",
        "svoe_datafeed_shards",
        "by (exchange, channel) (rate(svoe_events_total",
        "sum by (featureset) (rate(svoe_features_rows_total",
        "svoe_features_lag_seconds",
    ):
        assert needle in fleet
    detail = exprs("feed-detail")
    for metric in (
        "svoe_events_total",
        "svoe_last_event_timestamp_seconds",
        "svoe_sequence_gaps_total",
        "svoe_stream_backlog",
        "svoe_flush_duration_seconds_bucket",
        "svoe_flush_rows_total",
        "svoe_flush_bytes_total",
        "svoe_flush_errors_total",
    ):
        assert metric in detail
    assert "by (symbol" in detail
    lake = exprs("lake")
    assert "by (channel) (rate(svoe_flush_rows_total" in lake and "by (channel) (rate(svoe_flush_bytes_total" in lake


def test_panel_promql_is_valid(tmp_path: Path) -> None:
    rules = [{"record": f"panel:{i}", "expr": expr} for i, (*_, expr) in enumerate(targets())]
    f = tmp_path / "panels.yaml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    proc = subprocess.run([tool("promtool"), "check", "rules", str(f)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The check bites: a broken expression fails.
    f.write_text(yaml.safe_dump({"groups": [{"name": "p", "rules": [{"record": "x", "expr": "sum by (a (x)"}]}]}))
    assert (
        subprocess.run([tool("promtool"), "check", "rules", str(f)], capture_output=True, check=False).returncode != 0
    )


def test_panels_use_contract_metric_names() -> None:
    known = contract_metrics() | EXTERNAL_METRICS
    for name, title, _, expr in targets():
        assert not referenced_metrics(expr) - known, (name, title, referenced_metrics(expr) - known)
    for d in dashboards().values():
        for v in d["templating"]["list"][1:]:
            assert not referenced_metrics(v["query"]["query"]) - known


# Expected results of the operator panels on the synthetic series below, keyed by (title, refId).
OPERATOR_EXPECTED: dict[tuple[str, str], list[tuple[str, float]]] = {
    ("DataFeeds", "A"): [("{}", 2)],
    ("Ready", "A"): [("{}", 1)],
    ("Degraded", "A"): [("{}", 1)],
    ("Shards", "A"): [("{}", 5)],
    ("DataFeed status", "B"): [('{namespace="md", datafeed="binance"}', 0), ('{namespace="md", datafeed="kraken"}', 1)],
    ("Reconcile duration p99 by handler", "A"): [('{handler="reconcile"}', 0.09900000000000002)],
    # Two symbols of one FeatureSet at 2 rows/s each; the other FeatureSet stopped emitting.
    ("Features rows/s by FeatureSet", "A"): [('{featureset="btc"}', 4), ('{featureset="eth"}', 0)],
    ("Features lag behind the feed", "A"): [
        ('{namespace="md", featureset="btc"}', 1.5),
        ('{namespace="md", featureset="eth"}', 42),
    ],
}


def test_operator_panels_on_synthetic_series(tmp_path: Path) -> None:
    """The fleet panels fed by the operator, evaluated by promtool on series shaped like its export.

    Both replicas export the gauges (the standby keeps its last values): the panels must count a
    DataFeed once.
    """
    series = []
    for pod in ("svoe-operator-a", "svoe-operator-b"):
        base = f'job="svoe-operator", pod="{pod}", namespace="md"'
        series += [
            {"series": f'svoe_datafeed_ready{{{base}, datafeed="binance"}}', "values": "1x20"},
            {"series": f'svoe_datafeed_ready{{{base}, datafeed="kraken"}}', "values": "0x20"},
            {"series": f'svoe_datafeed_degraded{{{base}, datafeed="binance"}}', "values": "0x20"},
            {"series": f'svoe_datafeed_degraded{{{base}, datafeed="kraken"}}', "values": "1x20"},
            {"series": f'svoe_datafeed_shards{{{base}, datafeed="binance"}}', "values": "3x20"},
            {"series": f'svoe_datafeed_shards{{{base}, datafeed="kraken"}}', "values": "2x20"},
        ]
    for fs, symbol, rows, lag in (("btc", "BTC-USDT", "0+30x20", "1.5x20"), ("btc", "ETH-USDT", "0+30x20", None),
                                  ("eth", "ETH-USDT", "5x20", "42x20")):  # fmt: skip
        base = f'namespace="md", pod="{fs}-featurizer-x", featureset="{fs}"'
        series.append({"series": f'svoe_features_rows_total{{{base}, symbol="{symbol}"}}', "values": rows})
        if lag is not None:
            series.append({"series": f"svoe_features_lag_seconds{{{base}}}", "values": lag})
    # Every reconcile takes under 0.1 s: p99 interpolates to 0.099 in the first bucket.
    for le in ("0.1", "1", "+Inf"):
        series.append(
            {
                "series": "svoe_reconcile_duration_seconds_bucket"
                f'{{job="svoe-operator", pod="svoe-operator-a", handler="reconcile", le="{le}"}}',
                "values": "0+4x20",
            }
        )
    fleet = dashboards()["fleet"]
    tests = []
    found = set()
    for p in panels(fleet):
        for t in p["targets"]:
            key = (p["title"], t["refId"])
            if key in OPERATOR_EXPECTED:
                found.add(key)
                tests.append(
                    {
                        "expr": expand(t["expr"]),
                        "eval_time": "4m",
                        "exp_samples": [{"labels": lbl, "value": v} for lbl, v in OPERATOR_EXPECTED[key]],
                    }
                )
    assert found == set(OPERATOR_EXPECTED)
    operator_targets = {(title, ref) for name, title, ref, expr in targets() if name == "fleet" and is_operator(expr)}
    untested = operator_targets - set(OPERATOR_EXPECTED)
    # The table's readiness (A) and shards (C) queries are the Ready/Shards panels without sum().
    assert untested <= {("DataFeed status", "A"), ("DataFeed status", "C")}, untested
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": []}))
    (tmp_path / "test.yaml").write_text(
        yaml.safe_dump(
            {
                "rule_files": ["rules.yaml"],
                "evaluation_interval": "15s",
                "tests": [{"interval": "15s", "input_series": series, "promql_expr_test": tests}],
            }
        )
    )
    proc = subprocess.run(
        [tool("promtool"), "test", "rules", "test.yaml"], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------- live


class Prometheus:
    def __init__(self, workdir: Path, jobs: dict[str, int]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]} for job, port in jobs.items()
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        self.log = workdir / "prometheus.log"
        self.proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"prometheus did not start: {self.log.read_text()[-2000:]}")

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        data = self.api("query", query=expr, time=f"{at:.3f}")
        return data["result"] if data["resultType"] == "vector" else [{"value": data["result"]}]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args!r} exited {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {timeout}s:\n{log.read_text(errors='replace')[-4000:]}")


def has_data(result: list[dict[str, Any]]) -> bool:
    for r in result:
        v = r["value"][1]
        if not (isinstance(v, str) and v.lower() in ("nan", "+inf", "-inf")) and not math.isnan(float(v)):
            return True
    return False


FEED_MANIFEST = """\
apiVersion: svoe.io/v1alpha1
kind: DataFeed
metadata:
  name: ship-live
spec:
  exchange: BINANCE_FUTURES
  channels: [trades, l2_book, ticker, candles]
  symbols: [SUSHI-USDT-PERP, AKRO-USDT-PERP, KEEP-USDT-PERP, CTK-USDT-PERP]
  storage:
    lake: {lake}
    # Flush often, so that the ~20 s replay produces many blocks and rates.
    flushIntervalSeconds: 1
  live:
    port: {live_port}
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_every_panel_returns_data_from_a_live_feed_and_operator(tmp_path: Path, captures: Path) -> None:
    if importlib.util.find_spec("svoe.cli") is None:
        pytest.skip("svoe.cli is not importable yet: `svoe run` does not exist")
    try:
        from svoe.testing.kube import PODS, KubeEmulator
    except ImportError:
        pytest.skip("svoe.testing.kube needs the dev dependencies: the operator panels cannot be fed live")
    crd_file = ROOT / "crds" / "datafeed.yaml"
    assert crd_file.exists(), "crds/datafeed.yaml is missing: run `make crds`"

    feed_port, op_port = free_port(), free_port()
    manifest = tmp_path / "feed.yaml"
    manifest.write_text(FEED_MANIFEST.format(lake=tmp_path / "lake", live_port=free_port()))

    with KubeEmulator() as kube:
        kube.apply_crd(yaml.safe_load(crd_file.read_text()))
        op_log = tmp_path / "operator.log"
        operator = subprocess.Popen(
            [sys.executable, "-m", "svoe.cli", "operator", "--all-namespaces"],
            env=kube.env(SVOE_OPERATOR_METRICS_PORT=str(op_port)),
            cwd=tmp_path,
            stdout=op_log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        prom = Prometheus(tmp_path, {"svoe-feed": feed_port, "svoe-operator": op_port})
        feed_log = tmp_path / "feed.log"
        feed = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "svoe.cli",
                "run",
                str(manifest),
                "--replay",
                str(captures),
                "--replay-speed",
                "2",
                "--metrics-port",
                str(feed_port),
            ],
            cwd=tmp_path,
            stdout=feed_log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"http://127.0.0.1:{op_port}/metrics", 60, operator, op_log)
            # Two DataFeeds: one whose pods turn Ready, one whose pods stay unready.
            for name in ("ready-feed", "pending-feed"):
                obj = yaml.safe_load(FEED_MANIFEST.format(lake="/data/lake", live_port=5555))
                obj["metadata"] = {"name": name, "namespace": "default"}
                kube.create(("svoe.io", "v1alpha1", "datafeeds"), obj, "default")
            pods = kube.wait_for(
                lambda: [p for p in kube.list(PODS, "default") if "ready-feed" in p["metadata"]["name"]],
                timeout=30,
                what="pods of ready-feed",
            )
            for p in pods:
                kube.set_pod_ready("default", p["metadata"]["name"])
            wait_http(f"http://127.0.0.1:{feed_port}/metrics", 60, feed, feed_log)

            def missing(at: float) -> list[str]:
                out = []
                for name, title, ref, expr in targets():
                    if any(m in expr for m in FEATURIZER_METRICS):
                        continue
                    if not has_data(prom.query(expr, at)):
                        out.append(f"{name} / {title} ({ref}): {expr}")
                for name, d in dashboards().items():
                    for v in d["templating"]["list"][1:]:
                        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["query"]["query"])
                        assert m, v
                        if m.group(2) in CLUSTER_ONLY_LABELS:
                            continue
                        values = prom.api(
                            f"label/{m.group(2)}/values",
                            **{"match[]": expand(m.group(1)), "start": f"{at - 300:.3f}", "end": f"{at:.3f}"},
                        )
                        if not values:
                            out.append(f"{name} / variable {v['name']}: {v['query']['query']}")
                return out

            # Every panel must show data while the feed runs; poll until all do, or the replay ends.
            deadline = time.monotonic() + 120
            empty = ["not evaluated"]
            while time.monotonic() < deadline and feed.poll() is None:
                empty = missing(time.time())
                if not empty:
                    break
                time.sleep(1)
            if empty and feed.poll() is not None:
                # The replay ended: evaluate at the last scrape that reached the feed.
                last = prom.api(
                    "query",
                    query='max_over_time(timestamp(up{job="svoe-feed"} == 1)[5m:1s])',
                    time=f"{time.time():.3f}",
                )
                empty = missing(float(last["result"][0]["value"][1]))
            assert not empty, (
                "panels without data:\n" + "\n".join(empty) + f"\nfeed log:\n{feed_log.read_text()[-3000:]}"
            )
        finally:
            for proc in (feed, operator):
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
            prom.stop()
