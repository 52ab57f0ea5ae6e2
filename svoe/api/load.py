"""Reading DataFeed and FeatureSet manifests from YAML, with errors that name the field and the fix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from svoe.api.datafeed import DataFeed, Resource
from svoe.api.featureset import FeatureSet, check_against_source, is_manifest_path


class ManifestError(ValueError):
    """A manifest that cannot be used. The message names the field and what is allowed."""


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif p.startswith(("function-", "literal[", "str-")) or p in ("list[str]",):
            continue
        else:
            parts.append(("." if parts else "") + p)
    return "".join(parts) or "(manifest)"


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = _field_path(tuple(e["loc"]))
        msg = str(e["msg"]).removeprefix("Value error, ")
        # A model-level check names its own field as "field: ..." so the path stays exact.
        m = re.match(r"^([a-z_A-Z][a-z_A-Z0-9.\[\]]*): (.*)$", msg, re.S)
        if m and e["type"] == "value_error" and not path.endswith(m.group(1)):
            path, msg = f"{path}.{m.group(1)}", m.group(2)
        if e["type"] == "literal_error" or e["type"] == "enum":
            msg = f"{msg} (got {e.get('input')!r})"
        elif e["type"] == "string_pattern_mismatch":
            msg = f"{e.get('input')!r} does not match {e['ctx']['pattern']}"
        lines.append(f"{path}: {msg}")
    return "\n".join(lines)


def _parse[R: Resource](model: type[R], kind: str, doc: Any, source: str) -> R:
    if not isinstance(doc, dict):
        raise ManifestError(
            f"{source}: expected a {kind} object (apiVersion, kind, metadata, spec), got {type(doc).__name__}"
        )
    try:
        return model.model_validate(doc)
    except ValidationError as err:
        raise ManifestError(f"{source}: invalid {kind}\n{format_validation_error(err)}") from None


def parse_manifest(doc: Any, source: str = "manifest") -> DataFeed:
    return _parse(DataFeed, "DataFeed", doc, source)


def _single_document(path: str | Path, kind: str) -> tuple[Path, Any]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ManifestError(
            f"{p}: cannot read the manifest ({err.strerror}); pass the path of a {kind} YAML file"
        ) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise ManifestError(f"{p}: not valid YAML: {err}; fix the syntax and run again") from None
    if len(docs) != 1:
        raise ManifestError(f"{p}: expected exactly one YAML document holding a {kind}, found {len(docs)}")
    return p, docs[0]


def load_manifest(path: str | Path, lake: str | None = None) -> DataFeed:
    """The DataFeed in `path`; with `lake`, its spec.storage.lake replaced (`--lake`)."""
    p, doc = _single_document(path, "DataFeed")
    feed = parse_manifest(doc, str(p))
    if lake is None:
        return feed
    # exclude_unset: what the manifest left to defaults stays a default (svoe run may then move a
    # busy default port).
    doc = feed.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True)
    doc["spec"].setdefault("storage", {})["lake"] = lake
    return parse_manifest(doc, f"{p} (with --lake {lake})")


def parse_featureset(doc: Any, source: str = "manifest") -> FeatureSet:
    return _parse(FeatureSet, "FeatureSet", doc, source)


def load_featureset(path: str | Path) -> FeatureSet:
    p, doc = _single_document(path, "FeatureSet")
    return parse_featureset(doc, str(p))


def source_manifest_path(featureset: FeatureSet, featureset_path: str | Path) -> Path:
    """The source DataFeed manifest of a local FeatureSet: spec.source, relative to the FeatureSet's file."""
    source = featureset.spec.source
    if not is_manifest_path(source):
        raise ManifestError(
            f"{featureset_path}: spec.source: {source!r} names a DataFeed in a cluster; locally, give the path "
            "of its manifest, e.g. source: ../binance-demo.yaml"
        )
    return (Path(featureset_path).parent / source) if not Path(source).is_absolute() else Path(source)


def check_source(featureset: FeatureSet, feed: DataFeed, where: str) -> None:
    """Raise ManifestError naming the field when the FeatureSet cannot be computed from `feed`."""
    s = feed.spec
    problems = check_against_source(featureset.spec, s.exchange, list(s.channels), list(s.symbols), feed.name)
    if problems:
        raise ManifestError(f"{where}: FeatureSet does not fit its source\n" + "\n".join(f"spec.{p}" for p in problems))


def load_featureset_and_source(path: str | Path) -> tuple[FeatureSet, DataFeed, Path]:
    """A local FeatureSet, its source DataFeed and the source manifest's path, checked against each other."""
    featureset = load_featureset(path)
    source = source_manifest_path(featureset, path)
    if not source.exists():
        raise ManifestError(
            f"{path}: spec.source: {source} does not exist; give the path of the DataFeed manifest, relative to "
            "the FeatureSet's file"
        )
    feed = load_manifest(source)
    check_source(featureset, feed, str(path))
    return featureset, feed, source
