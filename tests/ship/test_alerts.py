"""monitoring/alerts.yaml through the real promtool: syntax, unit tests, and the shared contracts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.ship.conftest import ROOT, tool

ALERTS = ROOT / "monitoring" / "alerts.yaml"
UNIT_TESTS = ROOT / "monitoring" / "tests" / "alerts_test.yaml"
REQUIRED = {
    "FeedDisconnected",
    "NoDataForSymbol",
    "SequenceGaps",
    "FlushFailing",
    "BacklogGrowing",
    "RedisMemoryHigh",
    "FeedPodCrashLooping",
    "DataFeedDegraded",
    "SvoeFeatureSetStale",
}
# Metrics from outside svoe that rules and dashboards may use.
EXTERNAL_METRICS = {"kube_pod_container_status_restarts_total", "kube_pod_labels"}


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def contract_metrics() -> set[str]:
    """Metric names of the table in docs/contracts.md."""
    text = (ROOT / "docs" / "contracts.md").read_text()
    table = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("|"):
            names.update(re.findall(r"`(svoe_[a-z_]+)`", line.split("|")[1]))
    assert len(names) > 15
    return names


def referenced_metrics(expr: str) -> set[str]:
    names = set(re.findall(r"\b(svoe_[a-z_]+|kube_[a-z_]+)\b", expr))
    # Histogram series.
    return {
        re.sub(r"_(bucket|count|sum)$", "", n)
        if n.startswith("svoe_") and n.endswith(("_bucket", "_count", "_sum"))
        else n
        for n in names
    }


def test_promtool_check_rules() -> None:
    proc = subprocess.run(
        [tool("promtool"), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules())} rules found" in proc.stdout


def test_promtool_unit_tests_pass() -> None:
    proc = subprocess.run(
        [tool("promtool"), "test", "rules", str(UNIT_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=UNIT_TESTS.parent,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_unit_tests_fail_when_a_rule_is_broken(tmp_path: Path) -> None:
    """The unit tests bite: a wrong threshold or label makes promtool fail."""
    (tmp_path / "tests").mkdir()
    broken = ALERTS.read_text().replace("> 300", "> 3000").replace("severity: critical", "severity: page", 1)
    (tmp_path / "alerts.yaml").write_text(broken)
    (tmp_path / "tests" / "alerts_test.yaml").write_text(UNIT_TESTS.read_text())
    proc = subprocess.run(
        [tool("promtool"), "test", "rules", "alerts_test.yaml"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path / "tests",
    )
    assert proc.returncode != 0
    assert "alertname: NoDataForSymbol" in proc.stdout + proc.stderr
    assert "alertname: FeedDisconnected" in proc.stdout + proc.stderr


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    cases: dict[str, dict[str, int]] = {}
    for t in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for c in t.get("alert_rule_test", []):
            kind = "firing" if c["exp_alerts"] else "quiet"
            cases.setdefault(c["alertname"], {"firing": 0, "quiet": 0})[kind] += 1
    assert set(cases) == REQUIRED
    for name, n in cases.items():
        assert n["firing"] >= 1 and n["quiet"] >= 1, f"{name}: {n}"


def test_alerts_follow_conventions() -> None:
    by_name = {r["alert"]: r for r in rules()}
    assert set(by_name) == REQUIRED
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^## (.+)$", runbooks, re.M)
    }
    for name, r in by_name.items():
        assert r["labels"]["severity"] in ("critical", "warning"), name
        assert r["labels"]["system"] == "svoe", name
        ann = r["annotations"]
        assert set(ann) == {"summary", "description", "runbook_url"}, name
        assert ann["runbook_url"] == f"docs/runbooks.md#{name.lower()}"
        assert name.lower() in anchors, f"docs/runbooks.md has no section for {name}"


def test_rules_use_contract_metric_names() -> None:
    known = contract_metrics() | EXTERNAL_METRICS
    for r in rules():
        unknown = referenced_metrics(r["expr"]) - known
        assert not unknown, f"{r['alert']} uses metrics not in docs/contracts.md: {unknown}"
    # The DataFeedDegraded alert is built on the operator's status metric.
    assert "svoe_datafeed_degraded" in next(r["expr"] for r in rules() if r["alert"] == "DataFeedDegraded")
