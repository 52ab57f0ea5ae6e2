"""Shared helpers of the infrastructure tests: repository paths, HCL parsing that works with
both hcl2 module flavours, kops rendering through helm's Go template engine, and the cluster
inventory of kops/values."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import yaml

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
KOPS = ROOT / "kops"
THANOS = ROOT / "thanos"
HELM = ROOT / ".tools" / "helm"
ENVIRONMENTS = ("dev", "prod")


def helm() -> str:
    if not HELM.exists():
        raise AssertionError(f"{HELM} is missing: run `make helm` (make test does it first)")
    return str(HELM)


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, **kw)


# --------------------------------------------------------------------------------------------
# HCL. checkov's bc-python-hcl2 and python-hcl2 >= 5 install the same `hcl2` module with
# different output shapes: values wrapped in lists vs. bare, labels unquoted vs. quoted. The
# tests only need block labels, attribute names and a few string values, normalised here.


# bc-python-hcl2 wraps every attribute value in a one-element list; python-hcl2 does not.
_WRAPPED = isinstance(hcl2.loads("a = 1\n")["a"], list)


def _unquote(s: str) -> str:
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] == '"' else s


def _plain(v: Any) -> Any:
    if isinstance(v, str):
        return _unquote(v)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {_unquote(k): _plain(x) for k, x in _attrs(v).items()}
    return v


def _scalar(v: Any) -> Any:
    if _WRAPPED and isinstance(v, list) and len(v) == 1:
        v = v[0]
    return _plain(v)


def _attrs(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if not (k.startswith("__") and k.endswith("__"))}


@cache
def parse_tf(path: Path) -> dict[str, Any]:
    with path.open() as f:
        parsed: dict[str, Any] = hcl2.load(f)
    return parsed


def labelled_blocks(doc: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """`variable "x" {...}` blocks of one file as {x: attributes}."""
    out: dict[str, dict[str, Any]] = {}
    for entry in doc.get(kind, []):
        for label, body in entry.items():
            out[_unquote(label)] = _attrs(body)
    return out


def tf_dirs() -> list[Path]:
    return sorted({p.parent for p in TERRAFORM.rglob("*.tf") if ".terraform" not in p.parts})


def dir_blocks(d: Path, kind: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for tf in sorted(d.glob("*.tf")):
        blocks = labelled_blocks(parse_tf(tf), kind)
        dupes = out.keys() & blocks.keys()
        assert not dupes, f"{tf}: {kind} {sorted(dupes)} declared twice in {d}"
        out.update(blocks)
    return out


def attr(body: dict[str, Any], name: str) -> Any:
    return _scalar(body.get(name))


def tfvars(path: Path) -> dict[str, Any]:
    return {k: _scalar(v) for k, v in _attrs(parse_tf(path)).items()}


# --------------------------------------------------------------------------------------------
# kops: cluster inventory and rendering.


@dataclass(frozen=True)
class Cluster:
    env: str
    name: str  # file stem, e.g. eu-1
    values_files: tuple[Path, ...]  # global, env, cluster: the --values of kops toolbox template

    @property
    def key(self) -> str:
        return f"{self.env}-{self.name}"

    def values(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for f in self.values_files:
            merged.update(load_yaml(f))
        return merged


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def clusters() -> list[Cluster]:
    out = []
    for env in ENVIRONMENTS:
        for f in sorted((KOPS / "values" / env).glob("*.yaml")):
            files = (KOPS / "values" / "global.yaml", KOPS / "values" / f"{env}.yaml", f)
            out.append(Cluster(env, f.stem, files))
    return out


def render_kops(cluster: Cluster, workdir: Path) -> list[dict[str, Any]]:
    """Render kops/templates with the cluster's values through helm's `tpl`, i.e. Go
    text/template with sprig, the engine and function set of `kops toolbox template`."""
    chart = workdir / f"kops-{cluster.key}"
    (chart / "templates").mkdir(parents=True)
    (chart / "files").mkdir()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: kops-render\nversion: 0.1.0\n")
    for t in sorted((KOPS / "templates").glob("*.yaml")):
        shutil.copy(t, chart / "files" / t.name)
        (chart / "templates" / t.name).write_text(f'{{{{ tpl (.Files.Get "files/{t.name}") .Values }}}}\n')
    cmd = [helm(), "template", "kops", str(chart)]
    for f in cluster.values_files:
        cmd += ["--values", str(f)]
    res = run(cmd)
    assert res.returncode == 0, f"rendering kops templates for {cluster.key} failed:\n{res.stderr}"
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def net(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=True)


# --------------------------------------------------------------------------------------------
# Thanos chart.


def thanos_values_files(cluster: Cluster) -> list[Path]:
    files = [THANOS / "values" / f"{cluster.env}.yaml", THANOS / "values" / "clusters" / f"{cluster.key}.yaml"]
    if cluster.name == "observer":
        files.append(THANOS / "values" / "observer.yaml")
    return files


def render_thanos(cluster: Cluster, extra: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [helm(), "template", "thanos", str(THANOS / "chart"), "--namespace", "monitoring"]
    for f in thanos_values_files(cluster):
        cmd += ["--values", str(f)]
    return run(cmd + (extra or []))
