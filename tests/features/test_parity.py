"""Acceptance: for each shared exchange with books and trades, `svoe features live --replay`
and `svoe features offline` over the lake of that same run give identical rows, bit for bit.

The runs go three at a time (each is mostly start-up and waiting). `lateness` is 5 s so that a
loaded machine cannot close a tick before a stream's events arrive; the test still fails on any
late event, since only a late event could make live differ."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from svoe.net import free_port
from tests.conftest import selected_params
from tests.features.support import bits, book_and_trade_symbols, featureset_doc
from tests.pipeline_support import capture_manifest, svoe

EXCHANGES = ["BINANCE", "BINANCE_FUTURES", "BITFINEX", "GEMINI", "KRAKEN_FUTURES", "PHEMEX"]


def run_both(captures: Path, root: Path, exchange: str) -> dict[str, Any]:
    """One replay run of `exchange` with the featurizer live, then offline over its lake."""
    d = root / exchange
    d.mkdir(parents=True)
    (d / "feed.yaml").write_text(yaml.safe_dump(capture_manifest(captures, exchange, str(d / "lake"))))
    fs_doc = featureset_doc(exchange, book_and_trade_symbols(captures, exchange), "feed.yaml")
    fs_doc["spec"]["lateness"] = "5s"
    # Runs go three at a time: each names its own port (a default port that is free when checked
    # can be taken by a sibling run before it binds).
    fs_doc["spec"]["live"] = {"port": free_port()}
    (d / "fs.yaml").write_text(yaml.safe_dump(fs_doc))
    live = svoe("features", "live", str(d / "fs.yaml"), "--replay", str(captures), "--replay-speed", "10",
                "--out", str(d / "live.parquet"), "--health-port", "0")  # fmt: skip
    assert live.returncode == 0, live.stderr[-3000:]
    offline = svoe("features", "offline", str(d / "fs.yaml"), str(d / "lake"), "--out", str(d / "offline.parquet"))
    assert offline.returncode == 0, offline.stderr[-3000:]
    return {"dir": d, "live": live.stdout, "doc": fs_doc}


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, captures: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("feature-parity")
    wanted = selected_params(request, "exchange")
    if any(item.name.startswith("test_offline_window") for item in request.session.items):
        wanted = list(dict.fromkeys([*wanted, "BINANCE_FUTURES"]))
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = pool.map(lambda ex: run_both(captures, root, ex), wanted)
        return dict(zip(wanted, results, strict=True))


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_live_and_offline_rows_are_identical(runs: dict[str, Any], exchange: str) -> None:
    run = runs[exchange]
    late = re.search(r"late (\d+), duplicates (\d+), malformed (\d+)", run["live"])
    assert late, run["live"]
    assert late.groups() == ("0", "0", "0"), run["live"]
    live = pq.read_table(run["dir"] / "live.parquet")
    offline = pq.read_table(run["dir"] / "offline.parquet")
    assert live.schema.equals(offline.schema)
    assert live.column_names[:3] == ["timestamp", "exchange", "symbol"]
    assert live.num_rows > 50
    assert bits(live) == bits(offline)
    # Not vacuous: the book features have values, and so do the trade features wherever a trade came.
    values = live.to_pydict()
    assert sum(v is not None for v in values["mid"]) > live.num_rows // 2
    assert sum(v is not None for v in values["imbalance_3"]) > live.num_rows // 2
    assert any(v is not None for v in values["vwap"])
    assert any(v is not None and v > 0 for v in values["bar_volume"])
    symbols = set(values["symbol"])
    assert symbols <= set(run["doc"]["spec"]["symbols"]) and symbols
    # One row per symbol per tick, from the symbol's first event to the end, ticks on the interval.
    ts = [t.value for t in live["timestamp"]]
    assert all(t % 100_000_000 == 0 for t in ts)
    for s in symbols:
        own = sorted(t for t, sym in zip(ts, values["symbol"], strict=True) if sym == s)
        assert own == list(range(own[0], own[-1] + 1, 100_000_000))
        assert own[-1] == max(ts)


def test_offline_window_of_time(runs: dict[str, Any]) -> None:
    run = runs["BINANCE_FUTURES"]
    full = pq.read_table(run["dir"] / "offline.parquet").to_pandas()
    ticks = sorted(set(full["timestamp"]))
    start, end = ticks[len(ticks) // 3], ticks[2 * len(ticks) // 3]
    out = run["dir"] / "window.parquet"
    res = svoe("features", "offline", str(run["dir"] / "fs.yaml"), str(run["dir"] / "lake"), "--out", str(out),
               "--start", start.isoformat(), "--end", end.isoformat())  # fmt: skip
    assert res.returncode == 0, res.stderr
    part = pq.read_table(out).to_pandas()
    assert part["timestamp"].min() == start and part["timestamp"].max() == end
    # Windows reach back before --start, so every row equals the whole run's row for its tick.
    merged = part.merge(full, on=["timestamp", "symbol"], suffixes=("", "_full"))
    assert len(merged) == len(part)
    for col in ("mid", "vwap", "rv", "bar_close"):
        assert merged[col].fillna(-1.0).tolist() == merged[f"{col}_full"].fillna(-1.0).tolist(), col
