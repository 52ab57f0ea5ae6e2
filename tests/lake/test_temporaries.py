"""`svoe lake compact` removes the temporary files of dead block writes from every closed partition:
compacted ones and ones holding nothing else too, and never from an open one."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import orjson

from svoe.api.datafeed import StorageOptions
from svoe.feedpod.block_writer import encode_and_write
from svoe.lake.layout import TEMPORARY_SUFFIX, partition_dir, temporary_prefix
from svoe.lake.stats import lake_counts
from svoe.lake.temporaries import Sweep, Temporary, parse_temporary
from tests.pipeline_support import svoe

OLD = "2021-10-12"  # the date of the ids below


def _leftover(
    lake: Path, symbol: str, date: str, age: float = 3600, block: str = "1634000000000-0.pod-a.parquet"
) -> Path:
    """A file where a write of `block`, killed before its rename, leaves one (lake_writer's naming)."""
    path = (
        lake / partition_dir("trades", "BINANCE", symbol, date) / f"{temporary_prefix(block)}k1ll3d{TEMPORARY_SUFFIX}"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PAR1 torn")
    old = path.stat().st_mtime - age
    os.utime(path, (old, old))
    return path


def test_every_closed_partition_is_swept_and_no_open_one(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    n = 50
    ids = [f"1634000000000-{i}" for i in range(n)]
    payloads = [orjson.dumps([1634000000.0 + i, 1634000000.5 + i, "buy", "2", "1.5", str(i), None]) for i in range(n)]
    encode_and_write(StorageOptions(lake=str(lake)).model_dump_json(), "pod-a", "trades", "BINANCE", "BTC-USDT",
                     ids, payloads)  # fmt: skip
    res = svoe("lake", "compact", str(lake), "--min-age", "0")
    assert res.returncode == 0 and "compacted 1 partitions" in res.stdout, res.stdout + res.stderr

    in_compacted = _leftover(lake, "BTC-USDT", OLD)  # a late write of a collector killed afterwards
    alone = _leftover(lake, "ETH-USDT", OLD)  # a partition whose only write was killed
    today = dt.datetime.now(dt.UTC).date().isoformat()
    open_one = _leftover(lake, "BTC-USDT", today)
    young = _leftover(lake, "SOL-USDT", OLD, age=0)  # maybe a write still running
    foreign = in_compacted.with_name("notes.txt")
    foreign.write_text("not svoe's")

    res = svoe("lake", "compact", str(lake), "--channel", "trades", "--exchange", "BINANCE", "--symbol", "XRP-USDT")
    assert res.returncode == 0 and in_compacted.exists() and alone.exists(), res.stdout  # the filters hold

    res = svoe("lake", "compact", str(lake), "--min-age", "600")
    assert res.returncode == 0, res.stderr
    assert "removed 2 temporary files left" in res.stdout, res.stdout
    assert not in_compacted.exists() and not alone.exists()
    assert open_one.exists() and young.exists() and foreign.exists()
    assert lake_counts(str(lake)) == {"BINANCE": {"trades": {"BTC-USDT": n}}}


def test_which_temporaries_are_dead() -> None:
    name = f"{temporary_prefix('1-0.w.parquet')}x{TEMPORARY_SUFFIX}"
    t = parse_temporary(f"{partition_dir('trades', 'BINANCE', 'BTC-USDT', OLD)}/{name}", mtime=1000.0)
    assert t == Temporary(f"trades/exchange=BINANCE/symbol=BTC-USDT/date={OLD}/{name}", "trades", "BINANCE",
                          "BTC-USDT", OLD, 1000.0)  # fmt: skip
    assert parse_temporary(f"{partition_dir('trades', 'BINANCE', 'BTC-USDT', OLD)}/1-0.w.parquet", 0.0) is None
    assert parse_temporary(f"trades/BINANCE/BTC-USDT/{OLD}/{name}", 0.0) is None  # not the lake's layout
    assert Sweep(before="2021-10-13", min_age=60, now=1060.0).dead([t]) == [t]
    assert Sweep(before="2021-10-13", min_age=60, now=1059.0).dead([t]) == []  # still being written, maybe
    assert Sweep(before=OLD, min_age=0, now=1060.0).dead([t]) == []  # its partition is open
    assert Sweep("2021-10-13", 0, 1060.0, exchange="KRAKEN").dead([t]) == []
    assert Sweep("2021-10-13", 0, 1060.0, channels=["l2_book"]).dead([t]) == []
    assert Sweep("2021-10-13", 0, 1060.0, symbols=["ETH-USDT"]).dead([t]) == []
    assert Sweep("2021-10-13", 0, 1060.0, ["trades"], "BINANCE", ["BTC-USDT"]).dead([t]) == [t]
