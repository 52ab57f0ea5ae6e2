"""The live state machine message by message, and each feature kind against hand-computed values."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from svoe.api.load import parse_featureset
from svoe.features.live import Featurizer

EX = "BINANCE"
T0 = 1_700_000_000.0


def featureset(features: list[dict[str, Any]], symbols: tuple[str, ...] = ("BTC-USDT",), **spec: Any) -> Any:
    doc = {
        "apiVersion": "svoe.io/v1alpha1",
        "kind": "FeatureSet",
        "metadata": {"name": "t"},
        "spec": {"exchange": EX, "symbols": list(symbols), "source": "feed.yaml", "interval": "1s",
                 "features": features, **spec},
    }  # fmt: skip
    return parse_featureset(doc)


def book(rts: float, bids: list[list[str]], asks: list[list[str]], snapshot: bool = False) -> bytes:
    return orjson.dumps([None, rts, None, 1 if snapshot else 0, bids, asks])


def trade(rts: float, side: str, amount: str, price: str) -> bytes:
    return orjson.dumps([rts, rts, side, amount, price, "1", None])


class Feed:
    """Messages into a Featurizer with entry ids in stream order, as the aggregator publishes them."""

    def __init__(self, fz: Featurizer) -> None:
        self.fz = fz
        self.seq: dict[bytes, int] = {}
        self.now = 0.0

    def send(self, channel: str, payload: bytes, symbol: str = "BTC-USDT") -> None:
        topic = f"{EX}.{channel}.{symbol}".encode()
        self.seq[topic] = self.seq.get(topic, 0) + 1
        self.fz.on_message(topic, payload, f"{1000 + self.seq[topic]}-0".encode(), self.now)


BOOK_FEATURES = [
    {"name": "mid", "kind": "mid_price"},
    {"name": "spread", "kind": "spread"},
    {"name": "micro", "kind": "microprice"},
    {"name": "imb", "kind": "book_imbalance", "depth": 2},
]


def test_book_features_follow_snapshot_and_deltas() -> None:
    fz = Featurizer(featureset(BOOK_FEATURES))
    f = Feed(fz)
    f.send("l2_book", book(T0 + 0.2, [["100", "1"], ["99", "3"]], [["101", "2"], ["102", "4"]], snapshot=True))
    f.send("l2_book", book(T0 + 1.5, [["100", "0"]], [["100.5", "1"]]))  # best bid deleted, new best ask
    rows = fz.finish()
    assert [r[0] for r in rows] == [int((T0 + 1) * 1e9), int((T0 + 2) * 1e9)]
    assert rows[0][2] == [100.5, 1.0, (100 * 2 + 101 * 1) / 3, (4 - 6) / 10]
    assert rows[1][2] == [(99 + 100.5) / 2, 1.5, (99 * 1 + 100.5 * 3) / 4, (3 - 3) / 6]


def test_trade_windows_and_ohlcv() -> None:
    fs = featureset([
        {"name": "vwap", "kind": "vwap", "window": "2s"},
        {"name": "vol", "kind": "volume", "window": "1s"},
        {"name": "flow", "kind": "trade_imbalance", "window": "2s"},
        {"name": "bar", "kind": "ohlcv"},
    ])  # fmt: skip
    fz = Featurizer(fs)
    f = Feed(fz)
    f.send("trades", trade(T0 + 0.1, "buy", "1", "10"))
    f.send("trades", trade(T0 + 0.7, "sell", "3", "12"))
    f.send("trades", trade(T0 + 1.2, "buy", "2", "11"))
    f.send("trades", trade(T0 + 3.0, "buy", "1", "9"))  # exactly on tick 3: counts for it
    rows = fz.finish()
    assert [r[2] for r in rows] == [
        [(10 + 36) / 4, 4.0, (1 - 3) / 4, 10.0, 12.0, 10.0, 12.0, 4.0],
        [(10 + 36 + 22) / 6, 2.0, (3 - 3) / 6, 11.0, 11.0, 11.0, 11.0, 2.0],
        [(22 + 9) / 3, 1.0, 1.0, 9.0, 9.0, 9.0, 9.0, 1.0],
    ]


def test_realized_volatility_over_tick_mids() -> None:
    fz = Featurizer(featureset([{"name": "rv", "kind": "realized_volatility", "window": "2s"}]))
    f = Feed(fz)
    for i, mid in enumerate(("100", "101", "99", "99")):
        f.send("l2_book", book(T0 + i + 0.5, [[mid, "1"]], [[mid, "1"]], snapshot=True))
    rows = fz.finish()
    r1, r2, r3 = math.log(101 / 100), math.log(99 / 101), 0.0
    assert [r[2][0] for r in rows] == [None, math.sqrt(r1 * r1), math.sqrt(math.fsum([r1 * r1, r2 * r2])),
                                       math.sqrt(math.fsum([r2 * r2, r3 * r3]))]  # fmt: skip


def test_streams_interleave_in_any_order() -> None:
    """A trade of a later tick arriving before the book's earlier events holds nothing back."""
    fs = featureset([{"name": "mid", "kind": "mid_price"}, {"name": "vol", "kind": "volume", "window": "1s"}])
    fz = Featurizer(fs)
    f = Feed(fz)
    f.send("trades", trade(T0 + 2.5, "buy", "1", "10"))
    f.send("l2_book", book(T0 + 0.5, [["10", "1"]], [["12", "1"]], snapshot=True))
    f.send("l2_book", book(T0 + 1.5, [["11", "1"]], []))
    rows = fz.finish()
    assert [(r[0], r[2]) for r in rows] == [
        (int((T0 + 1) * 1e9), [11.0, 0.0]),
        (int((T0 + 2) * 1e9), [11.5, 0.0]),
        (int((T0 + 3) * 1e9), [11.5, 1.0]),
    ]


def test_ticks_close_when_every_stream_passed_or_went_quiet() -> None:
    fs = featureset([{"name": "mid", "kind": "mid_price"}], symbols=("BTC-USDT", "ETH-USDT"), lateness="2s")
    fz = Featurizer(fs)
    f = Feed(fz)
    f.send("l2_book", book(T0 + 0.5, [["10", "1"]], [["12", "1"]], snapshot=True))
    f.now = 2.5
    f.send("l2_book", book(T0 + 3.5, [["10", "1"]], []))
    f.now = 0.0
    assert fz.advance(f.now + 1, caught_up=True) == []  # ETH's stream may still send tick 1's events
    assert fz.advance(f.now + 3, caught_up=False) == []  # unread messages: silence proves nothing
    rows = fz.advance(f.now + 3, caught_up=True)  # ETH silent past lateness: BTC alone decides
    assert [r[0] for r in rows] == [int((T0 + k) * 1e9) for k in (1, 2, 3)]
    assert {r[1] for r in rows} == {"BTC-USDT"}
    # An ETH event for a closed tick is late: counted, and applied at the next open tick.
    f.now += 3
    f.send("l2_book", book(T0 + 0.7, [["1", "1"]], [["3", "1"]], snapshot=True), symbol="ETH-USDT")
    assert fz.counters.late == 1
    rows = fz.finish()
    assert [(r[1], r[2]) for r in rows] == [("BTC-USDT", [11.0]), ("ETH-USDT", [2.0])]


def test_repeats_and_malformed_messages_are_counted_and_skipped() -> None:
    fz = Featurizer(featureset([{"name": "mid", "kind": "mid_price"}]))
    topic = f"{EX}.l2_book.BTC-USDT".encode()
    snap = book(T0 + 0.5, [["10", "1"]], [["12", "1"]], snapshot=True)
    fz.on_message(topic, snap, b"5-0", 0.0)
    fz.on_message(topic, book(T0 + 0.6, [["11", "1"]], []), b"5-0", 0.0)  # republished after a restart
    fz.on_message(topic, b"not json", b"6-0", 0.0)
    fz.on_message(topic, orjson.dumps([1, 2]), b"7-0", 0.0)
    fz.on_message(f"{EX}.l2_book.BTC-USDT-PERP".encode(), snap, b"8-0", 0.0)  # a prefix match: not ours
    assert (fz.counters.duplicates, fz.counters.malformed, fz.counters.events["l2_book"]) == (1, 2, 1)
    assert [r[2] for r in fz.finish()] == [[11.0]]


def test_silent_source_gives_no_rows() -> None:
    fz = Featurizer(featureset([{"name": "mid", "kind": "mid_price"}]))
    assert fz.advance(1e9, caught_up=True) == [] and fz.finish() == []


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ({"name": "x", "kind": "vwapp", "window": "1s"}, "spec.features[0].kind: Input should be"),
        ({"name": "x", "kind": "vwap", "window": "500ms"}, "spec.features[0].window: 500ms is shorter than"),
        ({"name": "x", "kind": "vwap", "window": "1500ms"}, "spec.features[0].window: 1500ms is not a whole"),
        ({"name": "x", "kind": "vwap"}, "spec.features[0].window: vwap needs a window"),
        ({"name": "x", "kind": "mid_price", "depth": 2}, "spec.features[0].depth: mid_price has no depth"),
        ({"name": "Bad", "kind": "mid_price"}, "spec.features[0].name: 'Bad' does not match"),
    ],
)
def test_bad_features_name_the_field(feature: dict[str, Any], message: str) -> None:
    from svoe.api.load import ManifestError

    with pytest.raises(ManifestError) as err:
        featureset([feature])
    assert message in str(err.value)


def test_every_kind_is_documented() -> None:
    from pathlib import Path

    from svoe.api.featureset import FEATURE_KINDS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "features.md").read_text()
    assert [k for k in FEATURE_KINDS if f"| `{k}` |" not in doc] == []
