"""examples/feast/ against the FeatureSet whose offline output it serves, without importing Feast.

Feast does not resolve with the locked dependencies (feast 0.67.0 needs pandas<3 and prometheus-client<0.25;
the lock has pandas 3.1.1 and prometheus-client 0.26.0), so it is no dependency of svoe. These tests read the
repository as text: feature_store.yaml with yaml, features.py with ast. examples/feast/README.md has the
commands that run it with Feast in a venv of its own.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from svoe.api.load import load_featureset, parse_featureset

ROOT = Path(__file__).resolve().parents[1]
REPO = ROOT / "examples" / "feast"
FEATURESET = ROOT / "examples" / "features" / "binance-futures-features.yaml"
# `svoe features offline` writes these columns before one float64 column per feature.
KEY_COLUMNS = ["timestamp", "exchange", "symbol"]
ENTITY = {"exchange", "symbol"}


@dataclass
class Declared:
    """What features.py declares, as far as its text tells."""

    entities: dict[str, list[str]] = field(default_factory=dict)  # variable -> join keys
    sources: dict[str, dict[str, object]] = field(default_factory=dict)  # variable -> FileSource keywords
    views: list[dict[str, object]] = field(default_factory=list)  # FeatureView keywords


def _literal(node: ast.expr) -> object:
    """A constant, a list of them, a bare name (as `Name:x`), a `Field(...)`, or os.environ.get(VAR, DEFAULT)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Name):
        return f"Name:{node.id}"
    if isinstance(node, ast.Attribute):
        return f"Name:{node.attr}"
    if isinstance(node, ast.Call) and _callee(node) == "Field":
        return {k.arg: _literal(k.value) for k in node.keywords}
    if isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.environ.get", "os.getenv"):
        return {"env": _literal(node.args[0]), "default": _literal(node.args[1]) if len(node.args) > 1 else None}
    return ast.unparse(node)


def _callee(call: ast.Call) -> str:
    return call.func.id if isinstance(call.func, ast.Name) else ast.unparse(call.func).rsplit(".", 1)[-1]


def parse_features_py(text: str) -> Declared:
    declared = Declared()
    for stmt in ast.parse(text).body:
        if not (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call)):
            continue
        call, targets = stmt.value, [t.id for t in stmt.targets if isinstance(t, ast.Name)]
        keywords = {k.arg: _literal(k.value) for k in call.keywords if k.arg}
        kind = _callee(call)
        for target in targets:
            if kind == "Entity":
                keys = keywords.get("join_keys") or [keywords.get("name")]
                declared.entities[target] = [str(k) for k in keys] if isinstance(keys, list) else [str(keys)]
            elif kind == "FileSource":
                declared.sources[target] = keywords
        if kind == "FeatureView":
            declared.views.append(keywords)
    return declared


def repository_problems(declared: Declared, feature_columns: list[str]) -> list[str]:
    """What keeps features.py from serving the offline output of a FeatureSet with these feature columns."""
    output = KEY_COLUMNS + feature_columns
    if len(declared.views) != 1:
        return [f"features.py: expected one FeatureView, found {len(declared.views)}"]
    view = declared.views[0]
    problems = []
    entity_names = view.get("entities")
    if not isinstance(entity_names, list) or not all(str(e).startswith("Name:") for e in entity_names):
        return [f"FeatureView entities: expected a list of Entity variables, got {entity_names!r}"]
    join_keys = [k for e in entity_names for k in declared.entities.get(str(e).removeprefix("Name:"), [f"?{e}"])]
    if set(join_keys) != ENTITY or len(join_keys) != len(ENTITY):
        problems.append(f"join keys {join_keys} are not the output's entity columns {sorted(ENTITY)}")
    problems += [f"join key {k!r} is no column of the offline output {output}" for k in join_keys if k not in output]

    source = declared.sources.get(str(view.get("source", "")).removeprefix("Name:"))
    if source is None:
        problems.append(f"FeatureView source {view.get('source')!r} is no FileSource of features.py")
    else:
        if source.get("timestamp_field") != "timestamp":
            problems.append(f"FileSource timestamp_field is {source.get('timestamp_field')!r}, not 'timestamp'")
        path = source.get("path")
        default = path.get("default") if isinstance(path, dict) else path
        if not isinstance(default, str) or Path(default).is_absolute() or ".." in Path(default).parts:
            problems.append(f"FileSource path {path!r}: give a path relative to the repository (or an env var)")

    schema = view.get("schema")
    fields = [f for f in schema if isinstance(f, dict)] if isinstance(schema, list) else []
    features = [f for f in fields if f.get("name") not in join_keys]
    names = [f.get("name") for f in features]
    if names != feature_columns:
        missing = [c for c in feature_columns if c not in names]
        extra = [n for n in names if n not in feature_columns]
        problems.append(
            f"FeatureView schema features {names} are not the FeatureSet's columns {feature_columns} "
            f"(missing {missing}, not in the FeatureSet {extra})"
        )
    problems += [
        f"feature {f.get('name')!r} has dtype {f.get('dtype')!r}; the offline output has float64 (Float64)"
        for f in features
        if f.get("dtype") != "Name:Float64"
    ]
    problems += [
        f"join key {f.get('name')!r} has dtype {f.get('dtype')!r}; the offline output has strings (String)"
        for f in fields
        if f.get("name") in join_keys and f.get("dtype") != "Name:String"
    ]
    return problems


def featureset_columns() -> list[str]:
    return load_featureset(FEATURESET).spec.columns()


def test_feature_store_yaml_is_local_with_paths_under_the_repository() -> None:
    config = yaml.safe_load((REPO / "feature_store.yaml").read_text())
    assert config["provider"] == "local"
    assert config["offline_store"]["type"] == "file"
    assert config["online_store"]["type"] == "sqlite"
    ignored = (REPO / ".gitignore").read_text().split()
    for path in (config["registry"], config["online_store"]["path"]):
        assert not Path(path).is_absolute(), path
        assert (REPO / path).resolve().is_relative_to(REPO), path
        assert Path(path).parts[0] + "/" in ignored, f"{path} is not ignored by examples/feast/.gitignore"


def test_features_py_matches_the_featureset() -> None:
    declared = parse_features_py((REPO / "features.py").read_text())
    columns = featureset_columns()
    assert len(columns) == 13 and columns[-1] == "bar_volume", columns  # ohlcv gives five of them
    assert repository_problems(declared, columns) == []
    source = next(iter(declared.sources.values()))
    assert source["path"] == {"env": "SVOE_FEATURES_PARQUET", "default": "data/features.parquet"}


def _edited(old: str, new: str) -> Declared:
    text = (REPO / "features.py").read_text()
    assert old in text, old
    return parse_features_py(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        ('        Field(name="bar_volume", dtype=Float64),\n', "", "missing ['bar_volume']"),
        ('Field(name="rv_10s"', 'Field(name="rv_5s"', "not in the FeatureSet ['rv_5s']"),
        ('Field(name="mid", dtype=Float64)', 'Field(name="mid", dtype=Int64)', "'mid' has dtype 'Name:Int64'"),
        ('timestamp_field="timestamp"', 'timestamp_field="ts"', "timestamp_field is 'ts'"),
        ("entities=[exchange, symbol]", "entities=[symbol]", "join keys ['symbol']"),
        ('join_keys=["symbol"]', 'join_keys=["market"]', "'market' is no column"),
    ],
)
def test_a_repository_that_disagrees_is_reported(old: str, new: str, expect: str) -> None:
    problems = repository_problems(_edited(old, new), featureset_columns())
    assert any(expect in p for p in problems), problems


def test_a_featureset_that_gains_a_feature_is_reported() -> None:
    doc = yaml.safe_load(FEATURESET.read_text())
    doc["spec"]["features"].append({"name": "spread_2", "kind": "spread"})
    columns = parse_featureset(doc).spec.columns()
    problems = repository_problems(parse_features_py((REPO / "features.py").read_text()), columns)
    assert any("missing ['spread_2']" in p for p in problems), problems
