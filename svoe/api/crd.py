"""The DataFeed CustomResourceDefinition, generated from the pydantic models; and `make crds`.

`python -m svoe.api.crd` prints crds/datafeed.yaml, `python -m svoe.api.crd featureset`
crds/featureset.yaml (svoe/api/crd_featureset.py); a test fails when a committed file drifts
from this output. The spec schema is the pydantic JSON schema made structural (crd_schema.py),
plus what only the CRD can say: enums from cryptofeed's exchange map, list types and CEL rules,
so that the API server rejects at apply time whatever the schema can express.

The status schema comes from the status models (svoe/api/status.py), which the operator writes.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from svoe.api.crd_featureset import featureset_crd
from svoe.api.crd_schema import (
    AGE_COLUMN,
    EXCHANGE_COLUMN,
    READY_STALE_COLUMNS,
    SYMBOLS_COLUMN,
    cel_str,
    column,
    definition,
    exchange_and_symbols,
    model_schema,
    status_model_schema,
)
from svoe.api.datafeed import KIND, PLURAL, DataFeedSpec
from svoe.api.exchanges import STORED_CHANNELS, exchange_channels
from svoe.api.status import DataFeedStatus

SHORT_NAMES = ["df"]


def _channels_map() -> dict[str, tuple[str, ...]]:
    return {k: v for k, v in exchange_channels().items() if v}


def _channel_rule() -> dict[str, Any]:
    offered = _channels_map()
    lists = ", ".join(f"{cel_str(e)}: [{', '.join(cel_str(c) for c in cs)}]" for e, cs in offered.items())
    texts = ", ".join(f"{cel_str(e)}: {cel_str(', '.join(cs))}" for e, cs in offered.items())
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


def spec_schema() -> dict[str, Any]:
    spec = model_schema(DataFeedSpec, "What to collect (exchange, channels, symbols) and where to store it.")
    props = spec["properties"]
    exchange_and_symbols(props)
    channels = props["channels"]
    channels["x-kubernetes-list-type"] = "set"
    channels["maxItems"] = len(STORED_CHANNELS)
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
    status = status_model_schema(DataFeedStatus)
    props = status["properties"]
    props["shards"]["x-kubernetes-list-type"] = "map"
    props["shards"]["x-kubernetes-list-map-keys"] = ["index"]
    replicas = props["shards"]["items"]["properties"]["replicas"]
    replicas["x-kubernetes-list-type"] = "map"
    replicas["x-kubernetes-list-map-keys"] = ["replica"]
    for health in (props, props["shards"]["items"]["properties"], replicas["items"]["properties"]):
        health["lastEventTime"]["format"] = "date-time"
    for node in (props["conditions"], props["shards"], replicas):
        node.pop("default", None)
    return status


def crd() -> dict[str, Any]:
    """The DataFeed CRD."""
    columns = [
        EXCHANGE_COLUMN,
        column("Channels", "string", ".spec.channels", priority=1),
        SYMBOLS_COLUMN,
        column("Shards", "integer", ".status.shardCount"),
        column("Replicas", "integer", ".status.readyReplicas", "Ready feed pods, over all shards and replicas", 1),
        *READY_STALE_COLUMNS,
        column("Rate", "number", ".status.eventsPerSecond", "Events per second over the last minute, all shards"),
        column("Last Event", "date", ".status.lastEventTime", "The stalest shard's newest event"),
        column("Gaps", "integer", ".status.gapsLastHour", "Sequence gaps and disconnects in the last hour, all shards"),
        AGE_COLUMN,
    ]
    description = "A DataFeed: market data from one exchange, sharded into feed pods by the svoe operator."
    return definition(KIND, PLURAL, SHORT_NAMES, description, spec_schema(), status_schema(), columns)


def crd_yaml(kind: str = "datafeed") -> str:
    """The CRD of `kind` (datafeed, featureset) as the committed crds/KIND.yaml holds it."""
    command = "python -m svoe.api.crd" + ("" if kind == "datafeed" else f" {kind}")
    header = f"# Generated by `{command}` (make crds) from svoe/api. Do not edit by hand.\n"
    doc = {"datafeed": crd, "featureset": featureset_crd}[kind]()
    return header + yaml.safe_dump(doc, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    kind = args[0] if args else "datafeed"
    if kind not in ("datafeed", "featureset"):
        sys.stderr.write(f"unknown CRD {kind!r}: use datafeed or featureset\n")
        return 2
    sys.stdout.write(crd_yaml(kind))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
