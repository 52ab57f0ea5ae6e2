"""Lake jobs give the same output in one process, on a local pool and on a Dask cluster
(distributed.LocalCluster): compaction, snapshots over symbols and days, and the report."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from svoe.bench.lake import synth_l2_book
from svoe.bench.lake_seek import _as_lake_rows
from svoe.feedpod.block_writer import write_parts
from svoe.feedpod.lake_writer import LocalLakeWriter
from svoe.lake import Lake
from svoe.lake.jobs import run_tasks
from svoe.lake.schema import SVOE_COLUMNS
from svoe.lake.snapshot_job import snapshot_part, snapshot_tasks
from tests.pipeline_support import svoe

MIDNIGHT = dt.datetime(2023, 11, 15, tzinfo=dt.UTC).timestamp()
FAR = "2100-01-01"


def _shifted(rows: pa.Table, symbol_offset: float) -> pa.Table:
    """Synthetic rows moved so that their hour straddles a UTC midnight."""
    receipt = rows["receipt_timestamp"]
    shift = MIDNIGHT - 1800.0 + symbol_offset - pc.min(receipt).as_py()
    moved = pc.add(receipt, shift)
    ms = pc.cast(pc.floor(pc.multiply(moved, 1000)), pa.int64())
    ids = pc.binary_join_element_wise(pc.cast(ms, pa.string()), pc.cast(rows["svoe_seq"], pa.string()), "-")
    out = rows.set_column(rows.schema.get_field_index("receipt_timestamp"), "receipt_timestamp", moved)
    out = out.set_column(out.schema.get_field_index("svoe_ms"), "svoe_ms", ms)
    return out.set_column(out.schema.get_field_index("svoe_id"), "svoe_id", ids)


@pytest.fixture(scope="module")
def two_day_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two symbols' books across two date partitions, in blocks of 400 rows as the writer splits them."""
    root = tmp_path_factory.mktemp("jobs") / "lake"
    writer = LocalLakeWriter(root)
    for i, symbol in enumerate(("BTC-USD", "ETH-USD")):
        rows = _shifted(_as_lake_rows(synth_l2_book(3000, seed=i)), 60.0 * i)
        for start in range(0, rows.num_rows, 400):
            write_parts(writer, "l2_book", "BENCH", symbol, "bench", rows.slice(start, 400))
    dates = {p.parent.name for p in root.rglob("*.parquet")}
    assert dates == {"date=2023-11-14", "date=2023-11-15"}
    return root


@pytest.fixture(scope="module")
def dask_scheduler() -> Iterator[str]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield str(cluster.scheduler_address)


def test_snapshots_cut_at_midnight_equal_the_whole_range(two_day_lake: Path, dask_scheduler: str) -> None:
    lake = Lake(str(two_day_lake))
    for symbol in ("BTC-USD", "ETH-USD"):
        whole = lake.snapshots("BENCH", symbol, 5, "1s")
        tasks = snapshot_tasks(str(two_day_lake), "BENCH", [symbol], 5, "1s", None, None)
        assert [t.date for t in tasks] == ["2023-11-14", "2023-11-15"]
        for workers in (1, 2):
            parts = run_tasks(snapshot_part, tasks, label="snapshots", workers=workers, progress=False)
            assert pa.concat_tables([p.table for p in parts]).equals(whole)
        on_dask = run_tasks(snapshot_part, tasks, label="snapshots", scheduler=dask_scheduler, progress=False)
        assert pa.concat_tables([p.table for p in on_dask]).equals(whole)
        assert whole.num_rows > 3000 and (
            pc.min(whole["timestamp"]).as_py() < MIDNIGHT < pc.max(whole["timestamp"]).as_py()
        )


def test_snapshots_cli_writes_one_file_per_symbol_the_same_on_dask(two_day_lake: Path, dask_scheduler: str,
                                                                  tmp_path: Path) -> None:  # fmt: skip
    args = ["lake", "snapshots", str(two_day_lake), "--exchange", "BENCH", "--depth", "3", "--interval", "500ms"]
    local = svoe(*args, "--out", str(tmp_path / "local"), "--workers", "1")
    remote = svoe(*args, "--out", str(tmp_path / "dask"), "--scheduler", dask_scheduler)
    assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
    assert "4 symbol-days" in local.stdout
    for symbol in ("BTC-USD", "ETH-USD"):
        a, b = (
            pq.read_table(tmp_path / "local" / f"{symbol}.parquet"),
            pq.read_table(tmp_path / "dask" / f"{symbol}.parquet"),
        )
        assert a.equals(b) and a.num_rows > 0
        assert a.equals(Lake(str(two_day_lake)).snapshots("BENCH", symbol, 3, "500ms"))
    quick = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"}
    bad = svoe(*args, "--out", str(tmp_path / "x"), "--scheduler", "tcp://127.0.0.1:1", env=quick)
    assert bad.returncode == 2 and "Dask scheduler" in bad.stderr


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_compaction_on_dask_writes_the_same_files(two_day_lake: Path, dask_scheduler: str, tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "dask"
    shutil.copytree(two_day_lake, local)
    shutil.copytree(two_day_lake, remote)
    args = ["--before", FAR, "--min-age", "0", "--target-size", "256KB"]
    a = svoe("lake", "compact", str(local), *args, "--workers", "1")
    b = svoe("lake", "compact", str(remote), *args, "--scheduler", dask_scheduler)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert "compacted 4 partitions" in a.stdout and a.stdout == b.stdout
    files = _files(local)
    assert files == _files(remote) and len(files) < len(_files(two_day_lake))
    for symbol in ("BTC-USD", "ETH-USD"):
        before, after = (Lake(str(d)).read("l2_book", "BENCH", [symbol]) for d in (two_day_lake, local))
        content = [c for c in before.column_names if c not in SVOE_COLUMNS]
        assert after.select(content).equals(before.select(content))


def test_report_on_dask_is_the_same_page(two_day_lake: Path, dask_scheduler: str, tmp_path: Path) -> None:
    a = svoe("lake", "report", str(two_day_lake), "--out", str(tmp_path / "a.html"), "--workers", "1")
    b = svoe("lake", "report", str(two_day_lake), "--out", str(tmp_path / "b.html"), "--scheduler", dask_scheduler)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    generated = re.compile(r"generated \S+")
    pages = [generated.sub("", (tmp_path / n).read_text()) for n in ("a.html", "b.html")]
    assert pages[0] == pages[1] and "ETH-USD" in pages[0]
