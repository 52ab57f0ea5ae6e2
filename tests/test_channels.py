"""The channel registry (svoe/api/channels.py) and what is derived from it agree: the API enum and
the CRD, the buffer encoders, and the lake schemas, which must stay as lakes already hold them."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import get_args

import pydantic
import pytest

from svoe.api import parse_manifest
from svoe.api.channels import BOOK_CHANNELS, CHANNELS, FEED_EVENTS, MARKET_CHANNELS, SIMPLE_CHANNELS, Channel, keyed
from svoe.api.crd import crd
from svoe.api.exchanges import STORED_CHANNELS
from svoe.feedpod.block_decode import to_table
from svoe.feedpod.events import CHANNEL_FIELDS, SIMPLE_ENCODERS, decode, encode_book, encode_feed_event
from svoe.lake.schema import CHANNEL_SCHEMAS, SVOE_COLUMNS

_SVOE = "svoe_id:string svoe_ms:int64 svoe_seq:int32 svoe_writer:string svoe_origin:string"
_T = "timestamp:double receipt_timestamp:double"
_BOOK = f"{_T} sequence_number:int64 snapshot:bool"
_F, _S = "list<item: double>", "list<item: string>"
_L2 = f"bid_price:{_F} bid_size:{_F} ask_price:{_F} ask_size:{_F}"
_L3 = f"bid_order_id:{_S} bid_price:{_F} bid_size:{_F} ask_order_id:{_S} ask_price:{_F} ask_size:{_F}"
# The lake as written so far: the registry may be reshaped, but a column that changes name, type or
# place breaks the lakes, Glue tables and readers that exist.
STORED_SCHEMAS = {
    "trades": f"{_T} side:string amount:double price:double id:string type:string",
    "ticker": f"{_T} bid:double ask:double",
    "candles": f"{_T} start:double stop:double interval:string trades:int64 open:double close:double high:double "
    "low:double volume:double closed:bool",
    "funding": f"{_T} mark_price:double rate:double next_funding_time:double predicted_rate:double",
    "open_interest": f"{_T} open_interest:double",
    "feed_events": f"{_T} kind:string event_channel:string event_symbol:string detail:string",
    "liquidations": f"{_T} side:string quantity:double price:double id:string status:string",
    "l2_book": f"{_BOOK} {_L2}",
    "l3_book": f"{_BOOK} {_L3}",
}


@pytest.mark.parametrize("channel", sorted(STORED_SCHEMAS))
def test_lake_schema_is_unchanged(channel: str) -> None:
    got = " ".join(f"{f.name}:{f.type}" for f in CHANNEL_SCHEMAS[channel])
    assert got == f"{_SVOE} {STORED_SCHEMAS[channel]}"


def test_every_channel_has_a_schema_named_after_its_fields() -> None:
    assert set(CHANNEL_SCHEMAS) == set(CHANNELS) == set(STORED_SCHEMAS)
    for name, c in CHANNELS.items():
        assert tuple(CHANNEL_SCHEMAS[name].names) == (*SVOE_COLUMNS, *c.columns()), name
        assert CHANNEL_FIELDS[name] == c.fields


def test_api_enum_and_crd_list_the_market_channels_in_registry_order() -> None:
    assert get_args(Channel) == STORED_CHANNELS == MARKET_CHANNELS
    assert FEED_EVENTS in CHANNELS and FEED_EVENTS not in MARKET_CHANNELS
    channels = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["channels"]
    assert channels["items"]["enum"] == list(MARKET_CHANNELS) and channels["maxItems"] == len(MARKET_CHANNELS)


def test_feed_events_is_stored_but_not_a_channel_to_collect() -> None:
    doc = {"exchange": "BINANCE", "channels": ["trades", FEED_EVENTS], "symbols": ["BTC-USDT"]}
    with pytest.raises((pydantic.ValidationError, ValueError), match="channels"):
        parse_manifest({"apiVersion": "svoe.io/v1alpha1", "kind": "DataFeed", "metadata": {"name": "a"}, "spec": doc})


def test_every_simple_channel_has_the_encoder_of_its_fields() -> None:
    assert tuple(SIMPLE_ENCODERS) == SIMPLE_CHANNELS
    assert set(SIMPLE_CHANNELS) | set(BOOK_CHANNELS) | {FEED_EVENTS} == set(CHANNELS)
    for name in SIMPLE_CHANNELS:
        # An object whose every attribute is its own name: the entry then spells the fields in the
        # order the encoder writes them, which must be the registry's.
        obj = SimpleNamespace(**{f: f for f in CHANNELS[name].fields})
        entry = decode(name, SIMPLE_ENCODERS[name](obj, 1.5))
        assert entry == {f: 1.5 if f == "receipt_timestamp" else f for f in CHANNELS[name].fields}, name


@pytest.mark.parametrize("channel", BOOK_CHANNELS)
def test_book_entries_have_the_registry_fields_and_levels(channel: str) -> None:
    c = CHANNELS[channel]
    side = SimpleNamespace(to_list=lambda: [("10", "1")], to_dict=lambda: {"10": {"o1": "1"}})
    book = SimpleNamespace(timestamp=2.0, sequence_number=7, delta=None, book=SimpleNamespace(bids=side, asks=side))
    entry = decode(channel, encode_book(book, 3.0, full=True, depth=0, l3=c.l3))
    assert entry["sequence_number"] == 7 and entry["snapshot"] == 1
    assert [len(level) for level in entry["bids"]] == [len(c.level())]
    row = to_table(channel, ["1-0"], [encode_book(book, 3.0, full=True, depth=0, l3=c.l3)], "w").to_pylist()[0]
    assert row["bid_price"] == row["ask_price"] == [10.0] and row.get("bid_order_id", ["o1"]) == ["o1"]


def test_feed_event_entries_have_the_registry_fields() -> None:
    entry = decode(FEED_EVENTS, encode_feed_event("gap", 4.0, "l2_book", "BTC-USDT", {"seq_before": 1}))
    assert entry["kind"] == "gap" and entry["event_channel"] == "l2_book" and entry["detail"] == '{"seq_before":1}'


def test_a_table_kept_elsewhere_must_cover_exactly_the_registry() -> None:
    assert list(keyed({"b": 2, "a": 1}, ["a", "b"], "t")) == ["a", "b"]
    with pytest.raises(RuntimeError, match=r"missing \['b'\], not channels \['c'\]"):
        keyed({"a": 1, "c": 3}, ["a", "b"], "t")


def test_the_registry_is_light() -> None:
    code = (
        "import sys, svoe.api.channels, svoe.api.exchanges\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyarrow', 'cryptofeed', 'orjson') "
        "or m.startswith('svoe.feedpod')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
