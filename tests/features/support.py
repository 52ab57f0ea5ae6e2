"""FeatureSets over the shared captures: every feature kind, on each symbol the capture records
both books and trades for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from svoe.replay import capture_subscription

ALL_KINDS = [
    {"name": "mid", "kind": "mid_price"},
    {"name": "spread", "kind": "spread"},
    {"name": "micro", "kind": "microprice"},
    {"name": "imbalance_3", "kind": "book_imbalance", "depth": 3},
    {"name": "rv", "kind": "realized_volatility", "window": "1s"},
    {"name": "vwap", "kind": "vwap", "window": "1s"},
    {"name": "volume", "kind": "volume", "window": "500ms"},
    {"name": "flow", "kind": "trade_imbalance", "window": "1s"},
    {"name": "bar", "kind": "ohlcv"},
]


def book_and_trade_symbols(captures: Path, exchange: str) -> list[str]:
    sub = capture_subscription(str(captures), exchange)
    return [s for s in sub.get("l2_book", []) if s in sub.get("trades", [])]


def featureset_doc(exchange: str, symbols: list[str], source: str, interval: str = "100ms",
                   features: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    name = exchange.lower().replace("_", "-") + "-features"
    spec = {"exchange": exchange, "symbols": symbols, "source": source, "interval": interval}
    spec["features"] = features or ALL_KINDS
    return {"apiVersion": "svoe.io/v1alpha1", "kind": "FeatureSet", "metadata": {"name": name}, "spec": spec}


def bits(table: pa.Table) -> dict[str, list[Any]]:
    """Every column as exact values: floats by their IEEE bits, nulls as None."""
    out: dict[str, list[Any]] = {}
    for name in table.column_names:
        col = table[name]
        if pa.types.is_floating(col.type):
            raw = pc.cast(pc.fill_null(col, 0.0), pa.float64()).to_numpy().view("uint64").tolist()
            out[name] = [None if v is None else r for v, r in zip(col.to_pylist(), raw, strict=True)]
        else:
            out[name] = col.to_pylist()
    return out
