"""The FeatureSet CustomResourceDefinition (crds/featureset.yaml), generated from the pydantic models.

Besides the model's own schema, what only the CRD can say: the exchange enum, a feature's
parameters per kind as CEL rules (from FEATURE_KINDS), unique feature names (a map list), and a
source that in a cluster can only be a DataFeed name. The rest (windows against the interval,
column names, the source's symbols and channels) the operator checks and reports as InvalidSpec.
"""

from __future__ import annotations

from typing import Any

from svoe.api.crd_schema import (
    AGE_COLUMN,
    EXCHANGE_COLUMN,
    NAME_MAX_LENGTH,
    READY_STALE_COLUMNS,
    SYMBOLS_COLUMN,
    cel_str,
    column,
    definition,
    exchange_and_symbols,
    model_schema,
    status_model_schema,
)
from svoe.api.datafeed import NAME_PATTERN
from svoe.api.featureset import FEATURE_KINDS, KIND, PLURAL, FeatureSetSpec
from svoe.api.status import FeatureSetStatus

SHORT_NAMES = ["fs"]


def _verb(subjects: list[str], singular: str) -> str:
    return singular if len(subjects) == 1 else singular.removesuffix("s")


def _param_rules() -> list[dict[str, Any]]:
    """A feature's depth/window only where its kind takes it, and present where its kind needs it."""
    rules = []
    for param in ("depth", "window"):
        takes = [k for k, v in FEATURE_KINDS.items() if param in v.params]
        needs = [k for k, v in FEATURE_KINDS.items() if param in v.required]
        listed = ", ".join(cel_str(k) for k in takes)
        rules.append(
            {
                "rule": f"!has(self.{param}) || self.kind in [{listed}]",
                "message": f"{param}: only {', '.join(takes)} {_verb(takes, 'takes')} a {param}; remove it",
                "fieldPath": f".{param}",
            }
        )
        if needs:
            rules.append(
                {
                    "rule": f"has(self.{param}) || !(self.kind in [{', '.join(cel_str(k) for k in needs)}])",
                    "message": f"{param}: {', '.join(needs)} {_verb(needs, 'needs')} a {param}",
                    "fieldPath": f".{param}",
                    "reason": "FieldValueRequired",
                }
            )
    return rules


MAX_FEATURES = 64


def featureset_spec_schema() -> dict[str, Any]:
    spec = model_schema(FeatureSetSpec, "Features computed at a fixed interval from a DataFeed's live streams.")
    props = spec["properties"]
    exchange_and_symbols(props)
    # In a cluster the source is a DataFeed in the same namespace, never a manifest path.
    props["source"].update({"pattern": NAME_PATTERN, "maxLength": NAME_MAX_LENGTH})
    props["source"]["description"] = "The source DataFeed's name, in the same namespace."
    features = props["features"]
    features["maxItems"] = MAX_FEATURES
    # Keyed by name: the API server refuses two features of one name.
    features["x-kubernetes-list-type"] = "map"
    features["x-kubernetes-list-map-keys"] = ["name"]
    features["items"]["x-kubernetes-validations"] = _param_rules()
    props["live"]["properties"]["bind"]["maxLength"] = 255
    return spec


def featureset_status_schema() -> dict[str, Any]:
    status = status_model_schema(FeatureSetStatus)
    props = status["properties"]
    for f in ("lastTick", "lastSourceEvent"):
        props[f]["format"] = "date-time"
    return status


def featureset_crd() -> dict[str, Any]:
    """The FeatureSet CRD."""
    columns = [
        EXCHANGE_COLUMN,
        column("Source", "string", ".spec.source", "The source DataFeed"),
        column("Interval", "string", ".spec.interval"),
        SYMBOLS_COLUMN,
        column("Features", "integer", ".status.featureCount", "Output columns per symbol and tick", 1),
        *READY_STALE_COLUMNS,
        column("Rate", "number", ".status.rowsPerSecond", "Rows emitted per second over the last minute"),
        column("Last Tick", "date", ".status.lastTick", "The newest emitted tick"),
        AGE_COLUMN,
    ]
    description = "A FeatureSet: features of a DataFeed's live streams, computed by a featurizer Deployment."
    return definition(
        KIND, PLURAL, SHORT_NAMES, description, featureset_spec_schema(), featureset_status_schema(), columns
    )
