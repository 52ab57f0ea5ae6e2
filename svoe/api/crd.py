"""The DataFeed CustomResourceDefinition, generated from the pydantic models.

`python -m svoe.api.crd` prints crds/datafeed.yaml (`make crds`); a test fails when the committed
file drifts from this output. The spec schema is the pydantic JSON schema made structural
(Kubernetes rejects $ref, anyOf-with-null and additionalProperties next to properties), plus
what only the CRD can say: enums from cryptofeed's exchange map, list types and CEL rules, so
that the API server rejects at apply time whatever the schema can express.

The status schema comes from the status models (svoe/api/status.py), which the operator writes.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from svoe.api.datafeed import API_GROUP, API_VERSION, KIND, NAME_PATTERN, PLURAL, DataFeedSpec
from svoe.api.exchanges import STORED_CHANNELS, exchange_channels
from svoe.api.status import DataFeedStatus

SINGULAR = "datafeed"
SHORT_NAMES = ["df"]
CATEGORIES = ["svoe"]
# NAME_PATTERN allows 52 characters; pod names add the shard index and a revision.
NAME_MAX_LENGTH = 52


def _structural(schema: dict[str, Any], defs: dict[str, Any], top: bool = False) -> dict[str, Any]:
    """Pydantic JSON schema node -> Kubernetes structural OpenAPI v3 node."""
    node = copy.deepcopy(schema)
    if "$ref" in node:
        ref = node.pop("$ref").rsplit("/", 1)[-1]
        node = {**copy.deepcopy(defs[ref]), **node}
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"cannot express anyOf {variants} structurally")
        node = {**_structural(variants[0], defs), **node, "nullable": True}
        if node.get("default", "absent") is None:
            del node["default"]
    node.pop("title", None)
    if "properties" in node or not isinstance(node.get("additionalProperties"), dict):
        node.pop("additionalProperties", None)
    else:  # a map of strings (nodeSelector): structural as additionalProperties alone
        node["additionalProperties"] = _structural(node["additionalProperties"], defs)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "exclusiveMinimum" in node and not isinstance(node["exclusiveMinimum"], bool):
        node["minimum"] = node.pop("exclusiveMinimum")
        node["exclusiveMinimum"] = True
    if "exclusiveMaximum" in node and not isinstance(node["exclusiveMaximum"], bool):
        node["maximum"] = node.pop("exclusiveMaximum")
        node["exclusiveMaximum"] = True
    if "properties" in node:
        node["properties"] = {k: _structural(v, defs) for k, v in node["properties"].items()}
        node["type"] = "object"
        if not top and isinstance(node.get("default"), dict):
            # An empty default lets the API server fill each nested field from its own default.
            node["default"] = {}
    if "items" in node:
        node["items"] = _structural(node["items"], defs)
    return node


def _channels_map() -> dict[str, tuple[str, ...]]:
    return {k: v for k, v in exchange_channels().items() if v}


def _cel_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _channel_rule() -> dict[str, Any]:
    offered = _channels_map()
    lists = ", ".join(f"{_cel_str(e)}: [{', '.join(_cel_str(c) for c in cs)}]" for e, cs in offered.items())
    texts = ", ".join(f"{_cel_str(e)}: {_cel_str(', '.join(cs))}" for e, cs in offered.items())
    return {
        # The exchange enum guarantees the key exists.
        "rule": f"self.channels.all(c, c in {{{lists}}}[self.exchange])",
        "messageExpression": (
            "'channels: ' + self.exchange + ' does not offer every listed channel; allowed: ' + "
            f"{{{texts}}}[self.exchange]"
        ),
        "fieldPath": ".channels",
        "reason": "FieldValueNotSupported",
    }


_KEY_ORDER = ("type", "description", "nullable", "default", "enum", "pattern", "format", "minimum", "maximum")


def _ordered(node: Any) -> Any:
    """Type and description first in every node, for a readable YAML file."""
    if isinstance(node, dict):
        head = [k for k in _KEY_ORDER if k in node]
        rest = [k for k in node if k not in _KEY_ORDER]
        return {k: _ordered(node[k]) for k in head + rest}
    if isinstance(node, list):
        return [_ordered(v) for v in node]
    return node


def spec_schema() -> dict[str, Any]:
    raw = DataFeedSpec.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    spec = _structural(raw, defs, top=True)
    spec.pop("default", None)
    spec["description"] = "What to collect (exchange, channels, symbols) and where to store it."
    props = spec["properties"]
    props["exchange"]["enum"] = [e for e, cs in exchange_channels().items() if cs]
    channels = props["channels"]
    channels["x-kubernetes-list-type"] = "set"
    channels["maxItems"] = len(STORED_CHANNELS)
    symbols = props["symbols"]
    symbols["x-kubernetes-list-type"] = "set"
    symbols["items"]["maxLength"] = 124
    lake = props["storage"]["properties"]["lake"]
    lake["maxLength"] = 1024
    props["storage"]["x-kubernetes-validations"] = [
        {
            "rule": "!self.lake.contains('://') || self.lake.startsWith('s3://') || self.lake.startsWith('file://')",
            "message": "storage.lake: use a local path, file:///path or s3://bucket/prefix",
            "fieldPath": ".lake",
        },
        {
            "rule": "self.lake != 's3://'",
            "message": "storage.lake: an s3:// lake needs a bucket: s3://bucket/prefix",
            "fieldPath": ".lake",
        },
    ]
    for free_string in ("bind",):
        props["live"]["properties"][free_string]["maxLength"] = 255
    for key in ("websocket", "rest", "caFile"):
        props["endpoints"]["properties"][key]["maxLength"] = 2048
    spec["x-kubernetes-validations"] = [_channel_rule()]
    return spec


def status_schema() -> dict[str, Any]:
    raw = DataFeedStatus.model_json_schema(by_alias=True, mode="serialization")
    defs = raw.pop("$defs", {})
    status = _structural(raw, defs, top=True)
    status.pop("required", None)
    props = status["properties"]
    props["conditions"]["x-kubernetes-list-type"] = "map"
    props["conditions"]["x-kubernetes-list-map-keys"] = ["type"]
    props["shards"]["x-kubernetes-list-type"] = "map"
    props["shards"]["x-kubernetes-list-map-keys"] = ["index"]
    replicas = props["shards"]["items"]["properties"]["replicas"]
    replicas["x-kubernetes-list-type"] = "map"
    replicas["x-kubernetes-list-map-keys"] = ["replica"]
    props["conditions"]["items"]["properties"]["lastTransitionTime"]["format"] = "date-time"
    for health in (props, props["shards"]["items"]["properties"], replicas["items"]["properties"]):
        health["lastEventTime"]["format"] = "date-time"
    for node in (props["conditions"], props["shards"], replicas):
        node.pop("default", None)
    return status


def _strip_defaults_of_lists(node: Any) -> Any:
    # `default: []` on status lists adds nothing and pydantic emits it; keep the CRD lean.
    if isinstance(node, dict):
        if node.get("type") == "array" and node.get("default") == []:
            node.pop("default")
        for v in node.values():
            _strip_defaults_of_lists(v)
    elif isinstance(node, list):
        for v in node:
            _strip_defaults_of_lists(v)
    return node


def crd() -> dict[str, Any]:
    schema = {
        "type": "object",
        "description": "A DataFeed: market data from one exchange, sharded into feed pods by the svoe operator.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {
                "type": "object",
                "properties": {"name": {"type": "string", "pattern": NAME_PATTERN, "maxLength": NAME_MAX_LENGTH}},
            },
            "spec": spec_schema(),
            "status": _strip_defaults_of_lists(status_schema()),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{API_GROUP}",
            "labels": {"app.kubernetes.io/name": "svoe", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Exchange", "type": "string", "jsonPath": ".spec.exchange"},
                        {"name": "Channels", "type": "string", "jsonPath": ".spec.channels", "priority": 1},
                        {"name": "Symbols", "type": "integer", "jsonPath": ".status.symbolCount"},
                        {"name": "Shards", "type": "integer", "jsonPath": ".status.shardCount"},
                        {
                            "name": "Replicas",
                            "type": "integer",
                            "description": "Ready feed pods, over all shards and replicas",
                            "jsonPath": ".status.readyReplicas",
                            "priority": 1,
                        },
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {
                            "name": "Stale",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Stale")].status',
                        },
                        {
                            "name": "Rate",
                            "type": "number",
                            "description": "Events per second over the last minute, all shards",
                            "jsonPath": ".status.eventsPerSecond",
                        },
                        {
                            "name": "Last Event",
                            "type": "date",
                            "description": "The stalest shard's newest event",
                            "jsonPath": ".status.lastEventTime",
                        },
                        {
                            "name": "Gaps",
                            "type": "integer",
                            "description": "Sequence gaps and disconnects in the last hour, all shards",
                            "jsonPath": ".status.gapsLastHour",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": _ordered(schema)},
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `python -m svoe.api.crd` (make crds) from svoe/api. Do not edit by hand.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


def main() -> int:
    sys.stdout.write(crd_yaml())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
