"""The helmfile applies each environment's DataFeeds and FeatureSets through the svoe chart: on feed
clusters only, as objects the svoe models accept, every FeatureSet fitting its source DataFeed."""

from __future__ import annotations

from typing import Any

from svoe.api.load import check_source, parse_featureset, parse_manifest
from tests.ship.conftest import render_chart
from tests.ship.helmfile_state import ClusterState, cluster_states


def _rendered(state: ClusterState) -> list[dict[str, Any]]:
    release = state.release("svoe")
    values = {}
    for f in release.values_files:
        values.update(state.render_values(f))
    return render_chart(values, namespace="svoe", include_crds=False)


def test_dev_applies_its_example_datafeed_and_featureset() -> None:
    by_cluster = {s.cluster["name"]: _rendered(s) for s in cluster_states("dev")}
    feed_objs = [o for o in by_cluster["dev-eu-1"] if o["kind"] in ("DataFeed", "FeatureSet")]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in feed_objs) == [
        ("DataFeed", "binance-futures"),
        ("FeatureSet", "futures-features"),
    ]
    feeds = {o["metadata"]["name"]: parse_manifest(o, "dev DataFeed") for o in feed_objs if o["kind"] == "DataFeed"}
    for o in feed_objs:
        if o["kind"] == "FeatureSet":
            fs = parse_featureset(o, "dev FeatureSet")
            assert o["metadata"]["namespace"] == "svoe"
            check_source(fs, feeds[fs.spec.source], "dev FeatureSet")
    assert not [o for o in by_cluster["dev-observer"] if o["kind"] in ("DataFeed", "FeatureSet")]
