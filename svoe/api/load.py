"""Reading DataFeed manifests from YAML, with errors that name the field and the fix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from svoe.api.datafeed import DataFeed


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
        m = re.match(r"^([a-z_A-Z]+): (.*)$", msg, re.S)
        if m and e["type"] == "value_error" and not path.endswith(m.group(1)):
            path, msg = f"{path}.{m.group(1)}", m.group(2)
        if e["type"] == "literal_error" or e["type"] == "enum":
            msg = f"{msg} (got {e.get('input')!r})"
        elif e["type"] == "string_pattern_mismatch":
            msg = f"{e.get('input')!r} does not match {e['ctx']['pattern']}"
        lines.append(f"{path}: {msg}")
    return "\n".join(lines)


def parse_manifest(doc: Any, source: str = "manifest") -> DataFeed:
    if not isinstance(doc, dict):
        raise ManifestError(
            f"{source}: expected a DataFeed object (apiVersion, kind, metadata, spec), got {type(doc).__name__}"
        )
    try:
        return DataFeed.model_validate(doc)
    except ValidationError as err:
        raise ManifestError(f"{source}: invalid DataFeed\n{format_validation_error(err)}") from None


def load_manifest(path: str | Path) -> DataFeed:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ManifestError(
            f"{p}: cannot read the manifest ({err.strerror}); pass the path of a DataFeed YAML file"
        ) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise ManifestError(f"{p}: not valid YAML: {err}; fix the syntax and run again") from None
    if len(docs) != 1:
        raise ManifestError(f"{p}: expected exactly one YAML document holding a DataFeed, found {len(docs)}")
    return parse_manifest(docs[0], str(p))
