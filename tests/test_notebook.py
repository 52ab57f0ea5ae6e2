"""examples/notebooks/explore-lake.ipynb runs headless on a replayed lake: its bars, book and figure check out."""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from svoe.lake import Lake
from tests.pipeline_support import capture_manifest, svoe, write_manifest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebooks" / "explore-lake.ipynb"
# PHEMEX has ~1000 trades per symbol spread over hours of exchange time: enough for 1-minute bars.
EXCHANGE, SYMBOL = "PHEMEX", "XTZ-USD-PERP"

# Appended to the notebook: what it computed, as one JSON line.
REPORT = """\
import json, sys
print(json.dumps({
    "prefix": sys.prefix,
    "trades": len(trades),
    "bar_minutes": [int(t.timestamp()) // 60 for t in bars.index],
    "bar_trades": int(bars["trades"].sum()),
    "volume": float(bars["volume"].sum()),
    "ohlc_ok": bool(((bars["high"] >= bars[["open", "close"]].max(axis=1))
                     & (bars["low"] <= bars[["open", "close"]].min(axis=1))).all()),
    "snapshots": len(book),
    "spread_nan": int(book["spread"].isna().sum()),
    "spread_min": float(book["spread"].min()),
    "mid_inside": bool(((book["bid_price_0"] <= book["mid"]) & (book["mid"] <= book["ask_price_0"])).all()),
    "last": {k: float(book[k].iloc[-1]) for k in ("timestamp", "bid_price_0", "ask_price_0")},
}))
"""


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.slow
def test_explore_lake_notebook(captures: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = tmp_path / "lake"
    doc = capture_manifest(captures, EXCHANGE, str(lake), channels=["trades", "l2_book"])
    manifest = write_manifest(tmp_path / "feed.yaml", doc)
    res = svoe("run", str(manifest), "--replay", str(captures), "--metrics-port", "0")
    assert res.returncode == 0, res.stderr

    # The kernel must be this interpreter (the venv, where svoe is installed): a kernelspec in a
    # private JUPYTER_PATH, which comes before the user's and the system's, says so explicitly.
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"}))
    plot = tmp_path / "explore-lake.png"
    for name, value in {
        "JUPYTER_PATH": str(tmp_path / "jupyter"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "MPLCONFIGDIR": str(tmp_path / "matplotlib"),
        "SVOE_LAKE": str(lake),
        "SVOE_EXCHANGE": EXCHANGE,
        "SVOE_SYMBOL": SYMBOL,
        "SVOE_PLOT": str(plot),
    }.items():
        monkeypatch.setenv(name, value)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "store the notebook without outputs"
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    stdout = "".join(o.text for o in nb.cells[-1].outputs if o.output_type == "stream" and o.name == "stdout")
    got = json.loads(stdout.strip().splitlines()[-1])
    assert got["prefix"] == sys.prefix, "the kernel ran another Python than this venv's"

    # The figure was saved, and is a real picture.
    width, height = png_size(plot)
    assert width >= 800 and height >= 400, (width, height)
    assert plot.stat().st_size > 20_000

    # Bars: one per minute of exchange time that has a trade, and every trade's amount in one bar.
    trades = Lake(str(lake)).read("trades", exchange=EXCHANGE, symbols=[SYMBOL]).to_pylist()
    minutes = sorted({math.floor(t["timestamp"] / 60) for t in trades})
    assert len(trades) > 500 and got["trades"] == len(trades) == got["bar_trades"]
    assert got["bar_minutes"] == minutes
    assert len(minutes) > 60, "the bars span hours of exchange time, not the replay's second of receipt time"
    assert got["volume"] == pytest.approx(math.fsum(t["amount"] for t in trades), rel=1e-12)
    assert got["ohlc_ok"]

    # Book: a sampled, never crossed book whose last sample is the book rebuilt at that moment.
    assert got["snapshots"] >= 500
    assert got["spread_nan"] == 0 and got["spread_min"] >= 0 and got["mid_inside"]
    last = got["last"]
    book = Lake(str(lake)).book(EXCHANGE, SYMBOL, at=last["timestamp"], depth=1)
    assert (book["bids"][0][0], book["asks"][0][0]) == (last["bid_price_0"], last["ask_price_0"])
