"""The kind e2e cannot run here (no Docker engine); these checks keep its assets from rotting:
its DataFeed is valid for the API server and matches the capture (so the reference counts it
expects apply), its manifests are valid Kubernetes objects, and the chart renders with its values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from e2e.local.harness import EXCHANGE, EXCHANGE_CA, ROOT, Kubectl, capture_symbols
from svoe.api import load_manifest
from tests.ship.conftest import HELM, render_chart

KIND = ROOT / "e2e" / "kind"
NS = "svoe-e2e"  # run.sh's namespace


def objects(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_the_datafeed_matches_the_capture_and_the_exchange_service() -> None:
    feed = load_manifest(str(KIND / "manifests" / "datafeed.yaml"))
    channels, symbols = capture_symbols()
    assert feed.spec.exchange == EXCHANGE
    assert (sorted(feed.spec.channels), sorted(feed.spec.symbols)) == (sorted(channels), sorted(symbols))
    assert feed.spec.endpoints.ca_file == EXCHANGE_CA
    assert feed.spec.endpoints.websocket == f"wss://exchange.{NS}.svc:8443"
    assert feed.spec.storage.lake.startswith("s3://svoe-e2e/")
    assert f"NS={NS}\n" in (KIND / "run.sh").read_text()


def test_the_api_server_accepts_the_datafeed(kubectl: Kubectl) -> None:
    doc = objects(KIND / "manifests" / "datafeed.yaml")[0]
    out = kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(doc)).stdout
    assert "datafeed.svoe.io/futures created (server dry run)" in out


def test_the_manifests_are_valid_kubernetes_objects() -> None:
    found = []
    for path in sorted((KIND / "manifests").glob("*.yaml")):
        for obj in objects(path):
            if obj["apiVersion"].startswith("svoe.io/"):
                continue
            assert kubernetes_validate.validate(obj, "1.33", strict=True) == "1.33", path
            found.append(f"{obj['kind']}/{obj['metadata']['name']}")
    assert sorted(found) == [
        "Deployment/exchange",
        "Deployment/minio",
        "Job/create-bucket",
        "Service/exchange",
        "Service/minio",
    ]


def test_the_chart_renders_with_the_kind_values() -> None:
    if not HELM.exists():
        pytest.skip(f"{HELM} is missing: run `make helm` (make test does)")
    rendered = render_chart(namespace=NS, values_files=[KIND / "values.yaml"])
    kinds = {o["kind"] for o in rendered}
    assert not kinds & {"PodMonitor", "ServiceMonitor", "PrometheusRule"}, kinds
    deployment = next(o for o in rendered if o["kind"] == "Deployment")
    assert deployment["metadata"]["name"] == "svoe-operator"  # run.sh waits for it by this name
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert (container["image"], container["imagePullPolicy"]) == ("svoe-operator:e2e", "Never")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SVOE_FEED_IMAGE"] == env["SVOE_REDIS_IMAGE"] == "svoe-feedpod:e2e"
    assert (env["SVOE_IMAGE_PULL_POLICY"], env["SVOE_FEED_NODE_ROLE"]) == ("Never", "")
    # The exchange's CA and MinIO reach the feed pods through the operator, not an image.
    assert env["SVOE_FEED_CA_CONFIGMAP"] == "exchange-ca" and "exchange-ca" in (KIND / "run.sh").read_text()
    extra = json.loads(env["SVOE_FEED_EXTRA_ENV"])
    assert extra["AWS_ENDPOINT_URL"] == f"http://minio.{NS}.svc:9000"
    assert not (KIND / "feedpod-e2e.Dockerfile").exists()
    accounts = {o["metadata"]["name"] for o in rendered if o["kind"] == "ServiceAccount"}
    assert "svoe-feed" in accounts  # the feed pods' account exists in the DataFeed's namespace
