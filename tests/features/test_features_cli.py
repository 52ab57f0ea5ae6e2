"""`svoe features` as users run it: bad input exits 2 naming the field; a live featurizer against a
real ZMQ source reports a silent source as stale and publishes nothing made up."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
import zmq

from svoe.net import free_port
from svoe.testing.waiting import wait_for
from tests.pipeline_support import http_get

FEED = {
    "apiVersion": "svoe.io/v1alpha1",
    "kind": "DataFeed",
    "metadata": {"name": "src"},
    "spec": {"exchange": "BINANCE", "channels": ["l2_book", "ticker"], "symbols": ["BTC-USDT", "ETH-USDT"]},
}


def write(tmp: Path, features: list[dict[str, Any]], symbols: list[str], **spec: Any) -> Path:
    (tmp / "feed.yaml").write_text(yaml.safe_dump(FEED))
    doc = {
        "apiVersion": "svoe.io/v1alpha1",
        "kind": "FeatureSet",
        "metadata": {"name": "fs"},
        "spec": {"exchange": "BINANCE", "symbols": symbols, "source": "feed.yaml", "interval": "1s",
                 "features": features, **spec},
    }  # fmt: skip
    (tmp / "fs.yaml").write_text(yaml.safe_dump(doc))
    return tmp / "fs.yaml"


@pytest.mark.parametrize(
    ("features", "symbols", "field"),
    [
        ([{"name": "x", "kind": "depth_ratio"}], ["BTC-USDT"], "spec.features[0].kind"),
        ([{"name": "x", "kind": "vwap", "window": "100ms"}], ["BTC-USDT"], "spec.features[0].window"),
        ([{"name": "x", "kind": "mid_price"}], ["SOL-USDT"], "spec.symbols: SOL-USDT not in the source DataFeed src"),
        ([{"name": "x", "kind": "vwap", "window": "1s"}], ["BTC-USDT"], "spec.features: vwap read trades"),
    ],
)
def test_bad_input_exits_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            features: list[dict[str, Any]], symbols: list[str],
                                            field: str) -> None:  # fmt: skip
    from svoe.cli import main

    fs = write(tmp_path, features, symbols)
    for args in (["live", str(fs), "--replay", str(tmp_path)], ["offline", str(fs), str(tmp_path), "--out", "x"]):
        if args[0] == "offline" and ("spec.symbols" in field or "read trades" in field):
            continue  # offline reads the lake, not the source manifest
        assert main(["features", *args]) == 2
        err = capsys.readouterr().err
        assert field in err, err


def test_silent_source_is_stale_and_publishes_nothing_made_up(tmp_path: Path) -> None:
    fs = write(tmp_path, [{"name": "mid", "kind": "mid_price"}], ["BTC-USDT"], staleAfterSeconds=1.5,
               lateness="200ms", live={"port": free_port()})  # fmt: skip
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"fs.feature.")
    sub.connect(f"tcp://127.0.0.1:{yaml.safe_load(fs.read_text())['spec']['live']['port']}")
    health = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "svoe.cli", "features", "live", str(fs), "--connect", f"tcp://127.0.0.1:{port}",
         "--health-port", str(health)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: "[+] connected" in http_get(f"http://127.0.0.1:{health}/readyz")[1], 20, "the subscription")
        now = time.time()
        for i in range(3):  # a book now and 1 s ago, then nothing
            rts = now - 1 + i * 0.5
            payload = orjson.dumps([None, rts, None, 1, [["100", "1"]], [["102", str(i + 1)]]])
            pub.send_multipart([b"BINANCE.l2_book.BTC-USDT", payload, f"{int(rts * 1000)}-{i}".encode()])
        wait_for(lambda: json.loads(http_get(f"http://127.0.0.1:{health}/stats")[1])["stale"], 10, "stale")
        stats = json.loads(http_get(f"http://127.0.0.1:{health}/stats")[1])
        assert stats["sourceEvents"] == 3 and stats["rows"] >= 1
        status, ready = http_get(f"http://127.0.0.1:{health}/readyz")
        assert status == 503 and "[-] fresh: source stale" in ready
        assert 'svoe_features_stale{featureset="fs"} 1.0' in http_get(f"http://127.0.0.1:{health}/metrics")[1]
        published = []
        while sub.poll(200):
            published.append(orjson.loads(sub.recv_multipart()[1]))
        assert published and all(p["mid"] == 101.0 for p in published)
        time.sleep(1.5)  # silent: no tick is made up for the time without data
        assert json.loads(http_get(f"http://127.0.0.1:{health}/stats")[1])["rows"] == stats["rows"]
        assert not sub.poll(200)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        pub.close(0)
        sub.close(0)
    assert proc.returncode == 0, err
    assert "late 0, duplicates 0, malformed 0" in out
