"""Fixtures of the shipping tests: the real helm, promtool, prometheus, alertmanager and checkov."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "svoe"
HELM = ROOT / ".tools" / "helm"
KUBE_VERSION = "1.33.0"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed; .ci/run installs it (apt-get install prometheus prometheus-alertmanager)"
        )
    return path


def helm() -> str:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `make helm`")
    return str(HELM)


def render_chart(
    values: dict[str, Any] | None = None,
    *,
    namespace: str = "svoe",
    release: str = "svoe",
    values_files: list[Path] | None = None,
    include_crds: bool = True,
) -> list[dict[str, Any]]:
    """`helm template` the chart; returns the rendered objects."""
    cmd = [helm(), "template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    if include_crds:
        cmd.append("--include-crds")
    for f in values_files or []:
        cmd += ["--values", str(f)]
    proc = subprocess.run(
        [*cmd, "--values", "-"], input=yaml.safe_dump(values or {}), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def run_checkov(target: Path, framework: str) -> dict[str, Any]:
    """Run the real checkov over a file or directory; returns its JSON report (one framework)."""
    flag = "-d" if target.is_dir() else "-f"
    cmd = [
        str(Path(sys.executable).parent / "checkov"),
        flag,
        str(target),
        "--framework",
        framework,
        "--output",
        "json",
        "--skip-download",
        "--compact",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"checkov produced no JSON report (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    if isinstance(report, list):
        report = next(r for r in report if r.get("check_type") == framework)
    assert isinstance(report, dict)
    return report


@pytest.fixture(scope="session")
def chart_objects() -> list[dict[str, Any]]:
    return render_chart()
