"""A block is written as one Parquet part per UTC date of receipt, each named by its first id."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from decimal import Decimal as D
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from svoe.api.datafeed import StorageOptions
from svoe.feedpod import block_writer
from svoe.feedpod.block_decode import to_table
from svoe.feedpod.block_writer import BlockWriter, write_parts
from svoe.feedpod.events import encode_trade
from svoe.feedpod.lake_writer import LocalLakeWriter

MIDNIGHT = 1_796_256_000.0  # 2026-12-03 00:00:00 UTC
ROOT = Path(__file__).resolve().parents[1]


def ids_of(n: int) -> list[str]:
    return [f"1796256000000-{i}" for i in range(n)]


def _block(receipts: list[float]) -> tuple[list[str], list[bytes]]:
    ids = ids_of(len(receipts))
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


def _held_worker() -> None:
    """The writer process's initializer in the test below: it waits for the test's gate file."""
    gate = Path(os.environ["SVOE_TEST_WRITER_GATE"])
    while not gate.exists():
        time.sleep(0.01)


def test_starting_the_writer_does_not_wait_for_its_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The aggregator reads and publishes live only after start() returns; a start() that waited
    # for the process's imports held back the first events for a second or more.
    gate = tmp_path / "gate"
    monkeypatch.setenv("SVOE_TEST_WRITER_GATE", str(gate))
    monkeypatch.setattr(block_writer, "_init_worker", _held_worker)
    writer = BlockWriter(StorageOptions(lake=str(tmp_path / "lake")), "w")
    starting = threading.Thread(target=writer.start, daemon=True)
    starting.start()
    starting.join(30)
    returned = not starting.is_alive()
    gate.touch()  # the process may start now; blocks wait for it
    try:
        assert returned, "BlockWriter.start() waited for its process"
        ids, payloads = _block([MIDNIGHT + 1, MIDNIGHT + 2])
        assert asyncio.run(writer.write("trades", "BINANCE", "BTC-USDT", ids, payloads)) > 0
        assert list(_parts(tmp_path / "lake").values()) == [ids]
    finally:
        writer.close()


def test_writing_a_local_block_does_not_import_pandas(tmp_path: Path) -> None:
    # pyarrow imports pandas the first time it is handed a Python list or scalar: 0.39 CPU-seconds
    # of every block writer process's start, spent while the collector is busiest.
    script = f"""
import sys
from svoe.api.datafeed import StorageOptions
from svoe.feedpod.block_writer import encode_and_write, warm_up
from tests.test_block_writer import MIDNIGHT, _block
warm_up()
ids, payloads = _block([MIDNIGHT + 1, MIDNIGHT + 2])
storage = StorageOptions(lake={str(tmp_path)!r}).model_dump_json()
assert encode_and_write(storage, "w", "trades", "BINANCE", "BTC-USDT", ids, payloads) > 0
print("pandas" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
    assert list(_parts(tmp_path).values()) == [ids_of(2)]
