"""A block is written as one Parquet part per UTC date of receipt, each named by its first id."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq

from svoe.feedpod.block_decode import to_table
from svoe.feedpod.block_writer import write_parts
from svoe.feedpod.events import encode_trade
from svoe.feedpod.lake_writer import LocalLakeWriter

MIDNIGHT = 1_796_256_000.0  # 2026-12-03 00:00:00 UTC


def _block(receipts: list[float]) -> tuple[list[str], list[bytes]]:
    ids = [f"1796256000000-{i}" for i in range(len(receipts))]
    trade = SimpleNamespace(timestamp=1.0, side="buy", amount=D("1"), price=D("2"), id="t", type=None)
    return ids, [encode_trade(trade, r) for r in receipts]


def _parts(root: Path) -> dict[str, list[str]]:
    """date -> the ids stored in that date's part, by part name."""
    out: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.parquet")):
        date = path.parent.name.removeprefix("date=")
        out[f"{date}/{path.name}"] = pq.read_table(path)["svoe_id"].to_pylist()
    return out


def test_a_block_of_one_day_is_one_part(tmp_path: Path) -> None:
    ids, payloads = _block([MIDNIGHT + 5, MIDNIGHT + 1, MIDNIGHT + 86_399.9999995])
    write_parts(LocalLakeWriter(tmp_path), "trades", "BINANCE", "BTC-USDT", "w", to_table("trades", ids, payloads, "w"))
    assert _parts(tmp_path) == {"2026-12-03/1796256000000-0.w.parquet": ids}


def test_a_block_across_midnight_is_split_by_date_of_receipt(tmp_path: Path) -> None:
    ids, payloads = _block([MIDNIGHT - 0.000001, MIDNIGHT, MIDNIGHT - 2, MIDNIGHT + 3])
    write_parts(LocalLakeWriter(tmp_path), "trades", "BINANCE", "BTC-USDT", "w", to_table("trades", ids, payloads, "w"))
    assert _parts(tmp_path) == {
        "2026-12-02/1796256000000-0.w.parquet": [ids[0], ids[2]],
        "2026-12-03/1796256000000-1.w.parquet": [ids[1], ids[3]],
    }
