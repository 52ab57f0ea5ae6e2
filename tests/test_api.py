"""The DataFeed model and the CLI's answer to bad input: exit 2, naming the field and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from svoe.api import ManifestError, parse_manifest
from svoe.api.exchanges import exchange_channels
from tests.pipeline_support import svoe

GOOD: dict[str, Any] = {
    "apiVersion": "svoe.io/v1alpha1",
    "kind": "DataFeed",
    "metadata": {"name": "binance-demo"},
    "spec": {"exchange": "BINANCE", "channels": ["trades", "l2_book"], "symbols": ["BTC-USDT", "ETH-USDT"]},
}


def with_spec(**patch: Any) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    doc["spec"].update(patch)
    return doc


def test_defaults_and_aliases() -> None:
    feed = parse_manifest(with_spec(storage={"lake": "s3://b/p", "glueDatabase": "svoe", "flushMaxRows": 10}))
    assert feed.spec.storage.is_s3 and feed.spec.storage.flush_max_rows == 10
    assert feed.spec.storage.compression == "zstd"
    assert feed.streams()[0] == ("trades", "BTC-USDT")


def test_exchange_channels_come_from_cryptofeed() -> None:
    from cryptofeed.exchanges import EXCHANGE_MAP

    table = exchange_channels()
    assert set(table) == {str(k) for k in EXCHANGE_MAP}
    assert "l3_book" in table["INDEPENDENT_RESERVE"] and "l3_book" not in table["BINANCE"]


@pytest.mark.parametrize(
    ("patch", "field", "hint"),
    [
        ({"exchange": "NOPE"}, "spec.exchange", "allowed: BINANCE"),
        ({"channels": ["l3_book"]}, "spec.channels", "allowed: trades"),
        ({"channels": ["bogus"]}, "spec.channels[0]", "'trades'"),
        ({"symbols": []}, "spec.symbols", "e.g. BTC-USDT"),
        ({"symbols": ["btc/usdt"]}, "spec.symbols", "normalized form"),
        ({"symbols": ["BTC-USDT", "BTC-USDT"]}, "spec.symbols", "duplicate"),
        ({"storage": {"lake": "gs://x"}}, "spec.storage.lake", "s3://"),
    ],
)
def test_invalid_spec_names_field(patch: dict[str, Any], field: str, hint: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_manifest(with_spec(**patch))
    assert f"{field}:" in str(err.value) and hint in str(err.value)


@pytest.mark.parametrize(
    ("patch", "expect"),
    [
        ({"exchange": "NOPE"}, ["spec.exchange", "unknown exchange 'NOPE'", "BINANCE"]),
        ({"channels": ["l3_book"]}, ["spec.channels", "l3_book", "allowed"]),
        ({"symbols": []}, ["spec.symbols", "at least one symbol"]),
        ({"symbols": ["btc-usdt"]}, ["spec.symbols", "'btc-usdt'", "BTC-USDT"]),
    ],
)
def test_cli_bad_manifest_exits_2(tmp_path: Path, patch: dict[str, Any], expect: list[str]) -> None:
    path = tmp_path / "feed.yaml"
    path.write_text(yaml.safe_dump(with_spec(**patch)))
    res = svoe("run", str(path), "--lake", str(tmp_path / "lake"), timeout=60)
    assert res.returncode == 2, res.stderr
    for text in expect:
        assert text in res.stderr
    assert not (tmp_path / "lake").exists()  # nothing started


def test_cli_unreadable_yaml_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "feed.yaml"
    path.write_text("spec: [unclosed\n  exchange: BINANCE")
    res = svoe("run", str(path), timeout=60)
    assert res.returncode == 2 and "not valid YAML" in res.stderr and str(path) in res.stderr
    res = svoe("run", str(tmp_path / "missing.yaml"), timeout=60)
    assert res.returncode == 2 and "cannot read the manifest" in res.stderr


def test_help_explains_commands() -> None:
    res = svoe("--help", timeout=60)
    assert res.returncode == 0
    for cmd in ("run", "collector", "aggregator", "replay", "lake", "bench", "operator"):
        assert cmd in res.stdout
