"""`svoe lake report`: a self-contained page whose numbers are those of `svoe lake stats` and `svoe
lake gaps`, opened in headless Chromium (Debian's package): the DOM it parsed is read back and a
screenshot shows the charts drawn."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline_support import capture_manifest, svoe, write_manifest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars"]  # fmt: skip


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: .ci/run installs Debian's chromium package")
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


class Page(HTMLParser):
    """What the browser parsed: per article, channel rows and gap rows, as text and attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.symbols: dict[tuple[str, str], dict[str, Any]] = {}
        self.cur: dict[str, Any] | None = None
        self.row: dict[str, Any] | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "article":
            self.cur = {"channels": {}, "gaps": []}
            self.symbols[(a["data-exchange"], a["data-symbol"])] = self.cur
        elif tag == "tr" and self.cur is not None and ("data-channel" in a):
            self.row = {"attrs": a, "cells": []}
        elif tag == "td" and self.row is not None:
            self.cell = []

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self.row is not None and self.cell is not None:
            self.row["cells"].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None and self.cur is not None:
            a = self.row["attrs"]
            if a.get("class") == "gap":
                self.cur["gaps"].append(self.row)
            else:
                self.cur["channels"][a["data-channel"]] = self.row["cells"]
            self.row = None


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, captures: Path) -> tuple[Path, Path]:
    """A replay with three book updates of one symbol dropped, and its report."""
    tmp = tmp_path_factory.mktemp("report")
    lake = tmp / "lake"
    manifest = write_manifest(tmp / "f.yaml", capture_manifest(captures, "BINANCE_FUTURES", str(lake)))
    run = svoe("run", str(manifest), "--replay", str(captures), "--replay-drop", "akrousdt@depth:3",
               "--metrics-port", "0")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    again = svoe("run", str(manifest), "--replay", str(captures), "--metrics-port", "0")  # duplicates in storage
    assert again.returncode == 0, again.stderr[-3000:]
    page = tmp / "report.html"
    res = svoe("lake", "report", str(lake), "--out", str(page))
    assert res.returncode == 0, res.stderr
    assert "4 symbols of 1 exchanges" in res.stdout
    return lake, page


def test_the_page_fetches_nothing(report: tuple[Path, Path]) -> None:
    text = report[1].read_text()
    assert not re.search(r"<script|<link|<img|<iframe|\bsrc\s*=|\bhref\s*=|url\(|@import|https?://", text, re.I)
    assert text.count("<svg") == 2 * 4  # a timeline and a rate chart per symbol


def test_numbers_in_the_page_equal_stats_and_gaps(report: tuple[Path, Path], tmp_path: Path) -> None:
    lake, page = report
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0 and "<article" in dom.stdout, dom.stderr[-2000:]
    parsed = Page()
    parsed.feed(dom.stdout)
    events = json.loads(svoe("lake", "stats", str(lake), "--json").stdout)
    stored = json.loads(svoe("lake", "stats", str(lake), "--raw", "--json").stdout)
    gaps = json.loads(svoe("lake", "gaps", str(lake), "--json").stdout)
    assert gaps and {g["symbol"] for g in gaps} == {"AKRO-USDT-PERP"}
    seen = set()
    for (ex, sym), art in parsed.symbols.items():
        for channel, cells in art["channels"].items():
            n_events, n_stored = int(cells[1].replace(",", "")), int(cells[2].replace(",", ""))
            assert n_events == events[ex][channel][sym] and n_stored == stored[ex][channel][sym], (ex, sym, channel)
            assert n_stored > n_events  # two runs: every event stored twice but the dropped ones
            assert cells[3] == f"{(1 - n_events / n_stored) * 100:.2f}%"
            seen.add((ex, channel, sym))
        shown = sorted((g["attrs"]["data-channel"], g["attrs"]["data-kind"], float(g["attrs"]["data-start"]),
                        float(g["attrs"]["data-end"])) for g in art["gaps"])  # fmt: skip
        listed = sorted((g["channel"], g["kind"], g["start"], g["end"]) for g in gaps if g["symbol"] == sym)
        assert shown == listed
    assert seen == {(ex, ch, s) for ex, chs in events.items() for ch, syms in chs.items() for s in syms}


def test_chromium_draws_the_charts(report: tuple[Path, Path], tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "report.png"
    res = chromium(tmp_path, "--window-size=1000,1400", f"--screenshot={shot}", report[1].as_uri())
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20) or []
    count = {rgb: n for n, rgb in colours}

    def pixels(hex_colour: str) -> int:
        want = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        return sum(n for rgb, n in count.items() if all(abs(a - b) <= 6 for a, b in zip(rgb, want, strict=True)))

    from svoe.lake.report_html import COLOURS, COVERED, GAP, LANE

    # The first symbol (AKRO-USDT-PERP, with the gaps) is on screen: its lanes, gaps and stacked bars.
    assert pixels(COVERED) > 2000, "no coverage lanes drawn"
    # A gap is a rect at least 3 px wide, however short the gap; at a fractional x that is at
    # least 2 whole columns of the lane's height in the exact colour.
    assert pixels(GAP) >= 2 * (LANE - 4), "no gap drawn"
    for channel in ("l2_book", "ticker"):
        assert pixels(COLOURS[channel]) > 2000, f"no {channel} bars drawn"


def test_bad_report_input_exits_2(tmp_path: Path, report: tuple[Path, Path]) -> None:
    res = svoe("lake", "report", str(report[0]), "--out", str(tmp_path / "r.html"), "--date", "2021-02-30")
    assert res.returncode == 2 and "--date" in res.stderr
    res = svoe("lake", "report", str(report[0]), "--out", str(tmp_path / "r.html"), "--date", "2001-01-01")
    assert res.returncode == 2 and "no market data on 2001-01-01" in res.stderr
    res = svoe("lake", "report", str(report[0]), "--out", str(tmp_path / "missing" / "r.html"))
    assert res.returncode == 2 and "--out" in res.stderr


def test_coverage_counts_open_gaps_to_the_end_of_the_window_and_trims_to_the_day() -> None:
    from svoe.lake.gaps import Gap
    from svoe.lake.report import ChannelReport

    def report(gaps: list[Gap], window: tuple[float | None, float | None]) -> ChannelReport:
        return ChannelReport("trades", 10, 10, 100.0, 110.0, [], gaps, window)

    died = Gap("X", "trades", "S", "not_running", 108.0, None, "")
    assert report([died], (None, 120.0)).span == (100.0, 120.0)
    assert report([died], (None, 120.0)).coverage == pytest.approx(1 - 12 / 20)  # missing since 108
    yesterday = Gap("X", "trades", "S", "disconnect", 90.0, 102.0, "")
    day = report([yesterday], (100.0, 120.0))  # --date: only the part of the gap in the day counts
    assert day.span == (100.0, 110.0) and day.coverage == pytest.approx(1 - 2 / 10)
    assert report([], (None, None)).coverage == 1.0
