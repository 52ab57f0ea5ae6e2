"""Reads the helmfile layout the way helmfile does, for tests (no helmfile binary exists here).

helmfile.yaml.gotmpl -> environments (values files merged in order) -> `helmfiles:` entries, one per
cluster -> helmfile.d/states/cluster.yaml.gotmpl rendered with that cluster's values -> releases
with their values files (.gotmpl ones rendered with the same values).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.ship.conftest import ROOT
from tests.ship.gotmpl import Renderer, deep_merge

ENTRY = ROOT / "helmfile.yaml.gotmpl"


def _documents(path: Path) -> tuple[dict[str, Any], str]:
    """A helmfile state: the `environments:` part (plain YAML) and the templated rest."""
    head, sep, rest = path.read_text().partition("\n---\n")
    assert sep, f"{path}: expected `environments:` then `---` then the templated state"
    return yaml.safe_load(head) or {}, rest


def _merge_values(base_dir: Path, items: list[Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in items:
        if isinstance(item, str):
            f = base_dir / item
            assert f.exists(), f"values file {item} (relative to {base_dir}) does not exist"
            item = yaml.safe_load(f.read_text()) or {}
        assert isinstance(item, dict)
        values = deep_merge(values, item)
    return values


def environments() -> dict[str, dict[str, Any]]:
    head, _ = _documents(ENTRY)
    return {name: _merge_values(ROOT, spec.get("values", [])) for name, spec in head["environments"].items()}


@dataclass
class Release:
    name: str
    namespace: str
    chart: str
    version: str | None
    installed: bool
    values_files: list[Path]
    spec: dict[str, Any]


@dataclass
class ClusterState:
    env: str
    path: Path
    values: dict[str, Any]
    state: dict[str, Any]

    @property
    def cluster(self) -> dict[str, Any]:
        return dict(self.values["cluster"])

    def releases(self) -> list[Release]:
        out = []
        for r in self.state["releases"]:
            out.append(
                Release(
                    name=r["name"],
                    namespace=r["namespace"],
                    chart=str(r["chart"]),
                    version=None if r.get("version") is None else str(r["version"]),
                    installed=bool(r.get("installed", True)),
                    values_files=[(self.path.parent / v).resolve() for v in r.get("values", [])],
                    spec=r,
                )
            )
        return out

    def release(self, name: str) -> Release:
        return next(r for r in self.releases() if r.name == name)

    def render_values(self, f: Path) -> dict[str, Any]:
        """A release's values file as helmfile passes it to helm (templates rendered)."""
        text = f.read_text()
        if f.name.endswith(".gotmpl"):
            text = Renderer(self.path.parent).render(text, {"Values": self.values, "Environment": {"Name": self.env}})
        return yaml.safe_load(text) or {}


def cluster_states(env: str) -> list[ClusterState]:
    values = environments()[env]
    _, body = _documents(ENTRY)
    top = yaml.safe_load(Renderer(ROOT).render(body, {"Values": values, "Environment": {"Name": env}}))
    states = []
    for entry in top["helmfiles"]:
        path = ROOT / entry["path"]
        assert path.exists(), f"{entry['path']} does not exist"
        sub_values = _merge_values(ROOT, entry.get("values", []))
        head, sub_body = _documents(path)
        assert env in head.get("environments", {}), f"{path} does not declare environment {env}"
        rendered = Renderer(path.parent).render(sub_body, {"Values": sub_values, "Environment": {"Name": env}})
        states.append(ClusterState(env, path, sub_values, yaml.safe_load(rendered)))
    return states
