"""The generated CRD: committed file in sync, structural, and as strict as the pydantic model.

The API server's side is the emulator's admission, which applies the CRD like Kubernetes does:
structural defaulting and pruning, the OpenAPI schema, list types and the CEL rules.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from svoe.api.crd import crd, crd_yaml
from svoe.api.exchanges import STORED_CHANNELS, exchange_channels
from svoe.api.load import ManifestError, load_manifest, parse_manifest
from svoe.testing.kube import ApiError, KubeEmulator
from tests.operator.conftest import DATAFEEDS

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "datafeed.yaml"


def test_committed_crd_matches_the_model() -> None:
    assert CRD_FILE.read_text() == crd_yaml(), "crds/datafeed.yaml is stale: run `make crds` and commit it"


def test_crd_validates_against_kubernetes_1_33() -> None:
    doc = yaml.safe_load(CRD_FILE.read_text())
    assert kubernetes_validate.validate(doc, "1.33", strict=True) == "1.33"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for k, sub in (node.get("properties") or {}).items():
        out += _walk(sub, f"{path}.{k}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    return out


def test_schema_is_structural() -> None:
    version = crd()["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    for path, node in _walk(root):
        for banned in ("$ref", "anyOf", "oneOf", "allOf", "not", "title", "$defs", "definitions"):
            assert banned not in node, f"{path}: {banned} is not allowed in a structural schema"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "type" in node, f"{path}: every node needs a type"
        assert set(node.get("required", [])) <= set(node.get("properties", {})), path
        if "default" in node and node["type"] == "object":
            assert node["default"] == {}, f"{path}: object defaults are {{}} so nested defaults apply"
    meta = root["properties"]["metadata"]
    assert set(meta["properties"]) == {"name"}, "metadata may only constrain name"


def test_crd_surface() -> None:
    c = crd()
    spec = c["spec"]
    assert c["metadata"]["name"] == "datafeeds.svoe.io"
    assert spec["names"]["shortNames"] == ["df"] and spec["names"]["categories"] == ["svoe"]
    (version,) = spec["versions"]
    assert version["subresources"] == {"status": {}}
    assert [col["name"] for col in version["additionalPrinterColumns"]] == [
        "Exchange",
        "Channels",
        "Symbols",
        "Shards",
        "Replicas",
        "Ready",
        "Stale",
        "Rate",
        "Last Event",
        "Gaps",
        "Age",
    ]
    s = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert s["required"] == ["exchange", "channels", "symbols"]
    assert s["properties"]["channels"]["items"]["enum"] == list(STORED_CHANNELS)
    assert s["properties"]["channels"]["x-kubernetes-list-type"] == "set"
    assert s["properties"]["symbols"]["x-kubernetes-list-type"] == "set"
    assert set(s["properties"]["exchange"]["enum"]) == {e for e, cs in exchange_channels().items() if cs}
    assert s["properties"]["sharding"]["properties"]["maxSymbolsPerPod"]["default"] == 10


def _doc(name: str, **spec: Any) -> dict[str, Any]:
    base = {"exchange": "BINANCE", "channels": ["trades"], "symbols": ["BTC-USDT"]}
    return {"apiVersion": "svoe.io/v1alpha1", "kind": "DataFeed", "metadata": {"name": name}, "spec": base | spec}


# Each case: the manifest, and the field the API server's error must name.
INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "unknown-exchange": (_doc("a", exchange="NOPE"), "spec.exchange"),
    "unsupported-channel": (_doc("b", channels=["trades", "funding"]), "spec.channels"),
    "unknown-channel": (_doc("c", channels=["bars"]), "spec.channels"),
    "duplicate-channel": (_doc("d", channels=["trades", "trades"]), "spec.channels"),
    "duplicate-symbol": (_doc("e", symbols=["BTC-USDT", "BTC-USDT"]), "spec.symbols"),
    "lowercase-symbol": (_doc("f", symbols=["btc-usdt"]), "spec.symbols"),
    "no-symbols": (_doc("g", symbols=[]), "spec.symbols"),
    "no-channels": (_doc("h", channels=[]), "spec.channels"),
    "http-lake": (_doc("i", storage={"lake": "http://x/y"}), "spec.storage.lake"),
    "bucketless-s3": (_doc("j", storage={"lake": "s3://"}), "spec.storage.lake"),
    "zero-flush": (_doc("k", storage={"flushIntervalSeconds": 0}), "spec.storage.flushIntervalSeconds"),
    "bad-compression": (_doc("l", storage={"compression": "lz4"}), "spec.storage.compression"),
    "zero-shard-size": (_doc("m", sharding={"maxSymbolsPerPod": 0}), "spec.sharding.maxSymbolsPerPod"),
    "deep-book": (_doc("n", book={"depth": 5001}), "spec.book.depth"),
    "bad-candles": (_doc("o", candleInterval="1 minute"), "spec.candleInterval"),
    "bad-port": (_doc("p", live={"port": 70000}), "spec.live.port"),
    "http-websocket": (_doc("q", endpoints={"websocket": "ws://x"}), "spec.endpoints.websocket"),
    "upper-name": (_doc("Upper"), "metadata.name"),
    "long-name": (_doc("x" * 53), "metadata.name"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_api_server_and_model_both_reject(kube: KubeEmulator, case: str) -> None:
    doc, field = INVALID[case]
    with pytest.raises(ManifestError):
        parse_manifest(copy.deepcopy(doc))
    with pytest.raises(ApiError) as err:
        kube.create(DATAFEEDS, copy.deepcopy(doc), "crd")
    assert err.value.code == 422
    fields = [c["field"] for c in err.value.details["causes"]]
    assert any(f == field or f.startswith(field + ".") for f in fields), (fields, err.value.message)


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_api_server_accepts_the_examples_and_defaults_like_the_model(kube: KubeEmulator, path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    stored = kube.create(DATAFEEDS, doc, "crd-examples")
    model = load_manifest(path)
    # What the API server stores (with its defaults) is what the model reads (with its defaults).
    assert parse_manifest(stored).spec == model.spec
    assert stored["spec"] == model.spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_unknown_fields_are_refused_under_strict_field_validation(kube: KubeEmulator) -> None:
    doc = _doc("strict")
    doc["spec"]["exchnage"] = "BINANCE"
    with pytest.raises(ApiError) as err:
        kube.request("POST", kube.path(DATAFEEDS, "crd"), doc, query={"fieldValidation": "Strict"})
    assert "spec.exchnage" in err.value.message
    with pytest.raises(ManifestError, match="exchnage"):
        parse_manifest(doc)
