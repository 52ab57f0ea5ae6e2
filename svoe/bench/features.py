"""`svoe bench features`: the live featurizer's state machine alone, on synthetic messages in the
live stream's format: a 1,000-level book per symbol, then single-level deltas and trades
(one in five), with every feature kind at a 100 ms interval. Reports events per second."""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import orjson

from svoe.api.featureset import FEATURE_KINDS, FeatureSet
from svoe.features.live import Featurizer

T0 = 1_700_000_000.0
SYMBOLS = ("BTC-USDT", "ETH-USDT")


def _featureset() -> FeatureSet:
    features: list[dict[str, Any]] = []
    for kind, spec in FEATURE_KINDS.items():
        f: dict[str, Any] = {"name": kind, "kind": kind}
        if "depth" in spec.params:
            f["depth"] = 5
        if "window" in spec.params:
            f["window"] = "1s"
        features.append(f)
    doc = {"apiVersion": "svoe.io/v1alpha1", "kind": "FeatureSet", "metadata": {"name": "bench"},
           "spec": {"exchange": "BINANCE", "symbols": list(SYMBOLS), "source": "feed.yaml", "interval": "100ms",
                    "features": features}}  # fmt: skip
    return FeatureSet.model_validate(doc)


def messages(events: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    rnd = random.Random(seed)
    out = []
    for sym in SYMBOLS:
        bids = [[f"{100 - i * 0.01:.2f}", "1"] for i in range(1000)]
        asks = [[f"{100.01 + i * 0.01:.2f}", "1"] for i in range(1000)]
        out.append((f"BINANCE.l2_book.{sym}".encode(), orjson.dumps([None, T0, None, 1, bids, asks])))
    for i in range(events):
        sym, rts = SYMBOLS[i % 2], T0 + i * 0.001
        if i % 5 == 0:
            side, price = "buy" if i % 3 else "sell", f"{100 + rnd.random():.4f}"
            out.append((f"BINANCE.trades.{sym}".encode(), orjson.dumps([rts, rts, side, "0.5", price, str(i), None])))
        else:
            level = [[f"{min(100 + rnd.uniform(-5, 5), 99.99):.2f}", str(rnd.choice([0, 1, 2]))]]
            out.append((f"BINANCE.l2_book.{sym}".encode(), orjson.dumps([None, rts, None, 0, level, []])))
    return out


def run(events: int = 100_000, repeat: int = 3) -> dict[str, Any]:
    msgs = messages(events)
    rates = []
    rows = 0
    for _ in range(repeat):
        fz = Featurizer(_featureset())
        started = time.perf_counter()
        for j, (topic, payload) in enumerate(msgs):
            fz.on_message(topic, payload, f"{j + 1}-0".encode(), 0.0)
            if j % 200 == 0:
                fz.advance(0.0, caught_up=True)
        fz.finish()
        rates.append(len(msgs) / (time.perf_counter() - started))
        rows = fz.counters.rows
    return {"events": len(msgs), "rows": rows, "events_per_second_median": round(statistics.median(rates))}
