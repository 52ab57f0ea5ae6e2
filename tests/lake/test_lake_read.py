"""Reading the lake: layout names old and new, the integer order, writers that never collide, the
exactly-once view, pruning, SQL, and bad input that exits 2 naming what was wrong."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from svoe.feedpod.block_decode import to_table
from svoe.feedpod.lake_writer import LocalLakeWriter
from svoe.lake import Lake, LakeError
from svoe.lake.layout import BlockKey, parse_relpath, resolve, writer_identity
from svoe.lake.schema import CHANNEL_SCHEMAS
from svoe.lake.stats import lake_counts
from tests.pipeline_support import svoe

DATE = "2021-10-12"
T0 = 1634000000.0


def trade(ts: float | None, rts: float, tid: str, price: str = "1.5") -> bytes:
    return orjson.dumps([ts, rts, "buy", "2", price, tid, None])


def write(lake: Path, writer: str, channel: str, symbol: str, ids: list[str], payloads: list[bytes]) -> Path:
    key = BlockKey(channel, "BINANCE", symbol, DATE, ids[0], writer)
    LocalLakeWriter(lake).write_block(key, to_table(channel, ids, payloads, writer))
    return lake / key.relpath


def test_block_names_old_and_new() -> None:
    new = parse_relpath("trades/exchange=BINANCE/symbol=BTC-USDT/date=2021-10-12/1634000000000-12.pod-a.0.parquet")
    assert new == BlockKey("trades", "BINANCE", "BTC-USDT", "2021-10-12", "1634000000000-12", "pod-a.0")
    assert parse_relpath(new.relpath) == new
    old = parse_relpath("trades/exchange=BINANCE/symbol=BTC-USDT/date=2021-10-12/1634000000000-3.parquet")
    assert old is not None and old.writer is None and old.first_id == "1634000000000-3"
    for junk in ("trades/exchange=B/symbol=S/date=D/.tmp-x.parquet", "trades/exchange=B/x.parquet", "README.md"):
        assert parse_relpath(junk) is None
    assert writer_identity({"POD_NAME": "feed-0-abc"}) == "feed-0-abc"
    assert writer_identity({"SVOE_WRITER": "my run/1", "POD_NAME": "p"}) == "my_run_1"
    assert resolve("s3://bucket/pre/").uri("a/b") == "s3://bucket/pre/a/b"


def test_writer_identity_is_per_pod_instance() -> None:
    uid = "3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
    assert writer_identity({"POD_NAME": "binance-0", "POD_UID": uid}) == "binance-0-3f2a1b4c"
    # The same name recreated (a failed pod replaced) is a new writer.
    other = writer_identity({"POD_NAME": "binance-0", "POD_UID": "9e8d7c6b-0000-4000-8000-000000000000"})
    assert other == "binance-0-9e8d7c6b"
    assert writer_identity({"POD_NAME": "binance-0"}) == "binance-0"
    assert writer_identity({"POD_NAME": "binance-0", "POD_UID": ""}) == "binance-0"
    assert writer_identity({"SVOE_WRITER": "run-1", "POD_NAME": "binance-0", "POD_UID": uid}) == "run-1"


def test_integer_key_orders_where_the_string_does_not(tmp_path: Path) -> None:
    ids = [f"1634000000000-{i}" for i in range(12)]
    write(tmp_path, "w", "trades", "BTC-USDT", ids, [trade(T0 + i, T0 + 1, str(i)) for i in range(12)])
    table = Lake(str(tmp_path)).read("trades", raw=True)
    assert table["svoe_seq"].to_pylist() == list(range(12))
    assert table["id"].to_pylist() == [str(i) for i in range(12)]
    assert sorted(ids) != ids  # the string order would put -10 before -2


def test_two_writers_keep_their_blocks_and_the_view_holds_each_event_once(tmp_path: Path) -> None:
    events = [trade(T0, T0 + 0.1, "1"), trade(T0, T0 + 0.1, "1"), trade(T0 + 1, T0 + 1.1, "2")]  # a repeat
    ids = ["1634000000100-0", "1634000000100-1", "1634000001100-0"]
    a = write(tmp_path, "pod-a", "trades", "BTC-USDT", ids, events)
    b = write(tmp_path, "pod-b", "trades", "BTC-USDT", ids[:2], events[1:])  # same first id, one "1"
    assert a != b and a.exists() and b.exists()
    again = write(tmp_path, "pod-a", "trades", "BTC-USDT", ids, events)  # a retry replaces its own
    assert again == a
    assert lake_counts(str(tmp_path), raw=True) == {"BINANCE": {"trades": {"BTC-USDT": 5}}}
    assert lake_counts(str(tmp_path)) == {"BINANCE": {"trades": {"BTC-USDT": 3}}}
    view = Lake(str(tmp_path)).read("trades")
    assert view["id"].to_pylist() == ["1", "1", "2"]
    assert set(view["svoe_writer"].to_pylist()) == {"pod-a"}  # seen first by pod-a (same receipt times)


def test_older_layout_still_reads(tmp_path: Path) -> None:
    table = to_table("trades", ["1634000000000-9", "1634000000000-10"], [trade(T0, T0, "1"), trade(T0, T0, "2")], "x")
    old = table.drop_columns(["svoe_ms", "svoe_seq", "svoe_writer"])
    path = tmp_path / "trades/exchange=BINANCE/symbol=BTC-USDT/date=2021-10-12/1634000000000-9.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(old, path)
    got = Lake(str(tmp_path)).read("trades")
    assert got["svoe_seq"].to_pylist() == [9, 10] and got["svoe_writer"].to_pylist() == ["", ""]
    assert (
        lake_counts(str(tmp_path)) == lake_counts(str(tmp_path), raw=True) == {"BINANCE": {"trades": {"BTC-USDT": 2}}}
    )


def test_a_read_lists_only_its_partitions(tmp_path: Path) -> None:
    write(tmp_path, "w", "trades", "BTC-USDT", ["1634000000000-0"], [trade(T0, T0, "1")])
    other = tmp_path / f"trades/exchange=BINANCE/symbol=ETH-USDT/date={DATE}/1634000000000-0.w.parquet"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"not parquet")
    assert Lake(str(tmp_path)).read("trades", exchange="BINANCE", symbols=["BTC-USDT"]).num_rows == 1
    with pytest.raises(LakeError, match=r"unreadable Parquet file .*ETH-USDT"):
        Lake(str(tmp_path)).read("trades")


def test_time_window_and_sql(tmp_path: Path) -> None:
    ids = [f"1634000000000-{i}" for i in range(5)]
    write(tmp_path, "w", "trades", "BTC-USDT", ids, [trade(T0 + i, T0 + i, str(i)) for i in range(5)])
    lake = Lake(str(tmp_path))
    assert lake.read("trades", start=T0 + 1, end="2021-10-12T00:53:23Z")["id"].to_pylist() == ["1", "2"]
    res = svoe("lake", "sql", str(tmp_path), "SELECT symbol, date, count(*) AS n FROM trades GROUP BY ALL", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [{"symbol": "BTC-USDT", "date": DATE, "n": 5}]
    res = svoe("lake", "sql", str(tmp_path), "SELECT count(*) AS n FROM raw_trades", "--csv")
    assert res.stdout == "n\n5\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stats", "{lake}/nowhere"], "no lake at"),
        (["sql", "{lake}", "SELECT * FROM nosuch"], "the query failed"),
        (["book", "{lake}", "--exchange", "KRAKEN", "--symbol", "X", "--at", "1"], "it has BINANCE"),
        (["book", "{lake}", "--exchange", "BINANCE", "--symbol", "ETH-BTC", "--at", "1"], "it has BTC-USDT"),
        (["book", "{lake}", "--exchange", "BINANCE", "--symbol", "BTC-USDT", "--at", "tomorrow"], "is not a time"),
        (["book", "{lake}", "--exchange", "BINANCE", "--symbol", "BTC-USDT", "--at", str(T0 - 5)], "before"),
        (
            [
                "snapshots",
                "{lake}",
                "--exchange",
                "BINANCE",
                "--symbol",
                "BTC-USDT",
                "--depth",
                "5",
                "--interval",
                "1 parsec",
                "--out",
                "{lake}/x.parquet",
            ],
            "invalid interval",
        ),
        (
            [
                "snapshots",
                "{lake}",
                "--exchange",
                "BINANCE",
                "--symbol",
                "BTC-USDT",
                "--depth",
                "5",
                "--interval",
                "1s",
                "--start",
                "2030-01-01",
                "--out",
                "{lake}/x.parquet",
            ],
            "it holds them from",
        ),
    ],
)
def test_bad_input_exits_2_and_names_it(tmp_path: Path, args: list[str], message: str) -> None:
    book = orjson.dumps([T0, T0, 1, 1, [["10", "1"]], [["11", "2"]]])
    write(tmp_path, "w", "l2_book", "BTC-USDT", ["1634000000000-0"], [book])
    res = svoe("lake", *[a.format(lake=tmp_path) for a in args])
    assert res.returncode == 2, res.stderr
    assert message in res.stderr, res.stderr


def test_unknown_channel_and_foreign_file(tmp_path: Path) -> None:
    write(tmp_path, "w", "trades", "BTC-USDT", ["1634000000000-0"], [trade(T0, T0, "1")])
    with pytest.raises(LakeError, match="unknown channel 'trade'"):
        Lake(str(tmp_path)).read("trade")
    foreign = tmp_path / f"trades/exchange=BINANCE/symbol=BTC-USDT/date={DATE}/1634000000001-0.other.parquet"
    pq.write_table(pa.table({"price": ["a"]}), foreign)
    res = svoe("lake", "stats", str(tmp_path))
    assert res.returncode == 2 and "is not a svoe trades block" in res.stderr and "other" in res.stderr
    assert CHANNEL_SCHEMAS["trades"].field("svoe_ms").type == pa.int64()


def test_books_from_two_writers_rebuild_as_from_one(tmp_path: Path) -> None:
    """Writer b starts late with its own snapshot and sees each delta 50 ms after writer a: the
    view keeps a's copies, b's snapshot (a state a reached through deltas), and the book at every
    instant is the one a alone gives."""
    deltas = [([["10", str(k)]], [["11", "0"] if k == 3 else ["12", str(k)]]) for k in range(1, 7)]
    state: tuple[dict[str, str], dict[str, str]] = ({"10": "5", "9": "1"}, {"11": "2"})
    snapshot0 = [[[p, s] for p, s in state[0].items()], [[p, s] for p, s in state[1].items()]]
    rows_a = [orjson.dumps([T0, T0, 0, 1, *snapshot0])]
    rows_b: list[bytes] = []
    expected: list[tuple[float, dict[str, float], dict[str, float]]] = []
    for k, (bids, asks) in enumerate(deltas, start=1):
        rows_a.append(orjson.dumps([T0 + k - 0.2, T0 + k, k, 0, bids, asks]))  # exchange time, then receipt
        for side, levels in zip(state, (bids, asks), strict=True):
            for p, s in levels:
                if s == "0":
                    side.pop(p)
                else:
                    side[p] = s
        if k == 2:  # b's first book: the state after delta 2, fetched at T0 + 2.95
            snap = [[[p, s] for p, s in state[0].items()], [[p, s] for p, s in state[1].items()]]
            rows_b.append(orjson.dumps([T0 + 1.8, T0 + 2.95, 2, 1, *snap]))
        if k >= 3:
            rows_b.append(orjson.dumps([T0 + k - 0.2, T0 + k + 0.05, k, 0, bids, asks]))
        expected.append(
            (T0 + k + 0.5, {p: float(s) for p, s in state[0].items()}, {p: float(s) for p, s in state[1].items()})
        )
    ids_a = [f"{int((T0 + k) * 1000)}-0" for k in range(7)]
    ids_b = [f"{int((T0 + 2.95) * 1000)}-0", *(f"{int((T0 + k + 0.05) * 1000)}-0" for k in range(3, 7))]
    write(tmp_path, "a", "l2_book", "BTC-USDT", ids_a, rows_a)
    write(tmp_path, "b", "l2_book", "BTC-USDT", ids_b, rows_b)
    assert lake_counts(str(tmp_path), raw=True)["BINANCE"]["l2_book"]["BTC-USDT"] == 12
    assert lake_counts(str(tmp_path))["BINANCE"]["l2_book"]["BTC-USDT"] == 8  # a's 7 and b's own snapshot
    lake = Lake(str(tmp_path))
    for at, bids, asks in expected:
        book = lake.book("BINANCE", "BTC-USDT", at)
        assert book["bids"] == sorted(([float(p), s] for p, s in bids.items()), reverse=True), at
        assert book["asks"] == sorted([float(p), s] for p, s in asks.items()), at
