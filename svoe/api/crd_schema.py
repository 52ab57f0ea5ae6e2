"""What every svoe CRD is made of: pydantic JSON schema -> Kubernetes structural schema, and the
CustomResourceDefinition around a spec and status schema (svoe/api/crd.py, crd_featureset.py).

Kubernetes rejects $ref, anyOf-with-null and additionalProperties next to properties, so the
pydantic schema is rewritten node by node; the key order keeps the committed YAML readable.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from svoe.api.datafeed import API_GROUP, API_VERSION, NAME_PATTERN
from svoe.api.exchanges import exchange_channels

CATEGORIES = ["svoe"]
# NAME_PATTERN allows 52 characters; pod names add the shard index and a revision.
NAME_MAX_LENGTH = 52


def structural(schema: dict[str, Any], defs: dict[str, Any], top: bool = False) -> dict[str, Any]:
    """Pydantic JSON schema node -> Kubernetes structural OpenAPI v3 node."""
    node = copy.deepcopy(schema)
    if "$ref" in node:
        ref = node.pop("$ref").rsplit("/", 1)[-1]
        node = {**copy.deepcopy(defs[ref]), **node}
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"cannot express anyOf {variants} structurally")
        node = {**structural(variants[0], defs), **node, "nullable": True}
        if node.get("default", "absent") is None:
            del node["default"]
    node.pop("title", None)
    if "properties" in node or not isinstance(node.get("additionalProperties"), dict):
        node.pop("additionalProperties", None)
    else:  # a map of strings (nodeSelector): structural as additionalProperties alone
        node["additionalProperties"] = structural(node["additionalProperties"], defs)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "exclusiveMinimum" in node and not isinstance(node["exclusiveMinimum"], bool):
        node["minimum"] = node.pop("exclusiveMinimum")
        node["exclusiveMinimum"] = True
    if "exclusiveMaximum" in node and not isinstance(node["exclusiveMaximum"], bool):
        node["maximum"] = node.pop("exclusiveMaximum")
        node["exclusiveMaximum"] = True
    if "properties" in node:
        node["properties"] = {k: structural(v, defs) for k, v in node["properties"].items()}
        node["type"] = "object"
        if not top and isinstance(node.get("default"), dict):
            # An empty default lets the API server fill each nested field from its own default.
            node["default"] = {}
    if "items" in node:
        node["items"] = structural(node["items"], defs)
    return node


def cel_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


KEY_ORDER = ("type", "description", "nullable", "default", "enum", "pattern", "format", "minimum", "maximum")


def ordered(node: Any) -> Any:
    """Type and description first in every node, for a readable YAML file."""
    if isinstance(node, dict):
        head = [k for k in KEY_ORDER if k in node]
        rest = [k for k in node if k not in KEY_ORDER]
        return {k: ordered(node[k]) for k in head + rest}
    if isinstance(node, list):
        return [ordered(v) for v in node]
    return node


def strip_defaults_of_lists(node: Any) -> Any:
    # `default: []` on status lists adds nothing and pydantic emits it; keep the CRD lean.
    if isinstance(node, dict):
        if node.get("type") == "array" and node.get("default") == []:
            node.pop("default")
        for v in node.values():
            strip_defaults_of_lists(v)
    elif isinstance(node, list):
        for v in node:
            strip_defaults_of_lists(v)
    return node


def definition(
    kind: str,
    plural: str,
    short_names: list[str],
    description: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    schema = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {
                "type": "object",
                "properties": {"name": {"type": "string", "pattern": NAME_PATTERN, "maxLength": NAME_MAX_LENGTH}},
            },
            "spec": spec,
            "status": strip_defaults_of_lists(status),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{API_GROUP}",
            "labels": {"app.kubernetes.io/name": "svoe", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": ordered(schema)},
                }
            ],
        },
    }


def condition_column(name: str) -> dict[str, Any]:
    return column(name, "string", f'.status.conditions[?(@.type=="{name}")].status')


def model_schema(model: type[BaseModel], description: str) -> dict[str, Any]:
    """A spec model's structural schema, top level without pydantic's default."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    spec = structural(raw, defs, top=True)
    spec.pop("default", None)
    spec["description"] = description
    return spec


def status_model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A status model's structural schema: nothing required, conditions a list keyed by type."""
    raw = model.model_json_schema(by_alias=True, mode="serialization")
    defs = raw.pop("$defs", {})
    status = structural(raw, defs, top=True)
    status.pop("required", None)
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    conditions["items"]["properties"]["lastTransitionTime"]["format"] = "date-time"
    return status


def column(name: str, type_: str, path: str, description: str = "", priority: int = 0) -> dict[str, Any]:
    """An additionalPrinterColumn (priority 1: shown only with -o wide)."""
    out: dict[str, Any] = {"name": name, "type": type_}
    if description:
        out["description"] = description
    out["jsonPath"] = path
    if priority:
        out["priority"] = priority
    return out


def exchange_and_symbols(props: dict[str, Any]) -> None:
    """The exchange (one cryptofeed collects from) and symbols (a set) of a spec, as both kinds have them."""
    props["exchange"]["enum"] = [e for e, cs in exchange_channels().items() if cs]
    symbols = props["symbols"]
    symbols["x-kubernetes-list-type"] = "set"
    symbols["items"]["maxLength"] = 124


EXCHANGE_COLUMN = column("Exchange", "string", ".spec.exchange")
SYMBOLS_COLUMN = column("Symbols", "integer", ".status.symbolCount")
READY_STALE_COLUMNS = [condition_column("Ready"), condition_column("Stale")]
AGE_COLUMN = column("Age", "date", ".metadata.creationTimestamp")
