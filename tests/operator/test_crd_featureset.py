"""The generated FeatureSet CRD: committed file in sync, valid for Kubernetes, and as strict as the
pydantic model where a schema can be (the emulator's admission applies it like the API server)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from svoe.api.crd import crd_yaml
from svoe.api.crd_featureset import featureset_crd
from svoe.api.load import ManifestError, parse_featureset
from svoe.testing.kube import ApiError, KubeEmulator
from tests.operator.conftest import FEATURESETS
from tests.operator.test_crd import _walk

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "featureset.yaml"


def test_committed_crd_matches_the_model() -> None:
    assert CRD_FILE.read_text() == crd_yaml("featureset"), "crds/featureset.yaml is stale: run `make crds`"


def test_crd_validates_against_kubernetes_1_33() -> None:
    assert kubernetes_validate.validate(yaml.safe_load(CRD_FILE.read_text()), "1.33", strict=True) == "1.33"


def test_schema_is_structural_and_the_surface_is_kubectl_s() -> None:
    c = featureset_crd()
    (version,) = c["spec"]["versions"]
    for path, node in _walk(version["schema"]["openAPIV3Schema"]):
        for banned in ("$ref", "anyOf", "oneOf", "allOf", "title", "$defs"):
            assert banned not in node, f"{path}: {banned}"
        assert "type" in node, path
    names = c["spec"]["names"]
    assert (c["metadata"]["name"], names["shortNames"], names["categories"]) == (
        "featuresets.svoe.io",
        ["fs"],
        ["svoe"],
    )
    columns = {col["name"]: col.get("priority", 0) for col in version["additionalPrinterColumns"]}
    assert list(columns) == [
        "Exchange", "Source", "Interval", "Symbols", "Features", "Ready", "Stale", "Rate", "Last Tick", "Age"
    ]  # fmt: skip
    assert columns["Features"] == 1 and version["subresources"] == {"status": {}}


def _doc(name: str, **spec: Any) -> dict[str, Any]:
    base = {
        "exchange": "BINANCE",
        "symbols": ["BTC-USDT"],
        "source": "binance-demo",
        "features": [{"name": "mid", "kind": "mid_price"}],
    }
    return {"apiVersion": "svoe.io/v1alpha1", "kind": "FeatureSet", "metadata": {"name": name}, "spec": base | spec}


INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "unknown-exchange": (_doc("a", exchange="NOPE"), "spec.exchange"),
    "unknown-kind": (_doc("b", features=[{"name": "x", "kind": "rsi"}]), "spec.features[0].kind"),
    "depth-on-mid": (_doc("c", features=[{"name": "x", "kind": "mid_price", "depth": 5}]), "spec.features[0].depth"),
    "no-depth": (_doc("d", features=[{"name": "x", "kind": "book_imbalance"}]), "spec.features[0].depth"),
    "no-window": (_doc("e", features=[{"name": "x", "kind": "vwap"}]), "spec.features[0].window"),
    "same-name": (
        _doc("f", features=[{"name": "x", "kind": "mid_price"}, {"name": "x", "kind": "spread"}]),
        "spec.features[1]",
    ),
    "path-source": (_doc("g", source="../feed.yaml"), "spec.source"),
    "duplicate-symbol": (_doc("h", symbols=["BTC-USDT", "BTC-USDT"]), "spec.symbols"),
    "bad-interval": (_doc("i", interval="one second"), "spec.interval"),
    "no-features": (_doc("j", features=[]), "spec.features"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_api_server_rejects_what_the_model_rejects(kube: KubeEmulator, case: str) -> None:
    doc, field = INVALID[case]
    if case != "path-source":  # a manifest path is fine locally, only a cluster needs a name
        with pytest.raises(ManifestError):
            parse_featureset(copy.deepcopy(doc))
    with pytest.raises(ApiError) as err:
        kube.create(FEATURESETS, copy.deepcopy(doc), "crd")
    assert err.value.code == 422
    # JSON Schema errors name list items as .0., CEL and list-map errors as [0]: one spelling.
    fields = [re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", c["field"]) for c in err.value.details["causes"]]
    assert any(f == field or f.startswith(field) for f in fields), (fields, err.value.message)


def test_api_server_defaults_like_the_model(kube: KubeEmulator) -> None:
    doc = _doc("ok", features=[{"name": "imb", "kind": "book_imbalance", "depth": 5}, {"name": "bar", "kind": "ohlcv"}])
    stored = kube.create(FEATURESETS, doc, "crd")
    model = parse_featureset(doc)
    assert parse_featureset(stored).spec == model.spec
    assert stored["spec"] == model.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
