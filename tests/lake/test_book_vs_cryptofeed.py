"""`svoe lake book --at` against cryptofeed 3.0.1's own order books, for every captured exchange
with an l2_book reference count.

Each capture is replayed twice: through `svoe run` into a lake, and into an unmodified cryptofeed
feed configured like svoe's collector (full depth, checksum validation off). Both see one symbol's
book events in exchange order, so the i-th lake row of a symbol is paired with the i-th callback of
that symbol. The pairing is proven, not assumed: counts, timestamps, sequence numbers, the
snapshot/delta nature and the levels of every row must agree. At chosen events (the last one of
their receipt time in the lake) the book the lake rebuilds must equal cryptofeed's book after the
paired callback, level for level, prices and sizes as the doubles of cryptofeed's Decimals.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pytest
from cryptofeed.defines import ASK, BID

from svoe.api.load import load_manifest
from svoe.lake import Lake
from svoe.replay import capture_subscription, list_capture_exchanges, reference_counts, replay_feed
from tests.conftest import CAPTURES, selected_params, thread_env
from tests.pipeline_support import capture_manifest, write_manifest

Levels = list[list[float]]
CHANNEL = "l2_book"
CLI_DEPTH = 5
# About this many `book --at` checks per exchange (at least first and last per symbol, and resyncs).
PICKS_PER_EXCHANGE = 20
# `svoe run`s prepared ahead on worker threads while the main thread checks an earlier exchange.
RUN_THREADS = 2


def _book_exchanges() -> list[str]:
    if not (CAPTURES / "README.md").exists():
        return []
    counts = reference_counts(CAPTURES)
    return [ex for ex in list_capture_exchanges(CAPTURES) if counts.get(ex, {}).get(CHANNEL)]


@dataclass
class RefEvent:
    """One cryptofeed book callback: the fields the lake row must hold, and the book after it."""

    timestamp: float | None
    sequence_number: int | None
    snapshot: bool
    bids: Levels  # the row's levels: the delta's, or the whole book for a snapshot
    asks: Levels
    book: tuple[Levels, Levels] | None = None  # the full book after the event, for chosen events only


def _levels(pairs: Iterable[tuple[Any, Any]]) -> Levels:
    return [[float(price), float(size)] for price, size in pairs]


def _row_levels(prices: list[float] | None, sizes: list[float] | None) -> Levels:
    return [[p, s] for p, s in zip(prices or [], sizes or [], strict=True)]


def _eligible(receipt: np.ndarray) -> list[int]:
    """Rows that are the last of their receipt time, so that `book --at` that time is the book after
    exactly that row. `book` applies rows in view order with receipt times made monotonic (a running
    maximum); a row whose own time is below that maximum is never the last at any time."""
    seen = np.maximum.accumulate(receipt)  # the order `book` applies rows in, as the view makes it
    last_of_time = np.r_[seen[1:] > seen[:-1], True] & (receipt == seen)
    return list(np.flatnonzero(last_of_time).tolist())


def _chosen(eligible: list[int], snapshot: list[bool], spread: int) -> list[int]:
    """Deterministic picks among the eligible rows: the first, the last, `spread` evenly between,
    and the first at or after every later snapshot row (a resync)."""
    if not eligible:
        return []
    last = len(eligible) - 1
    picks = {eligible[0], eligible[-1], *(eligible[last * k // (spread + 1)] for k in range(1, spread + 1))}
    for s in np.flatnonzero(snapshot)[1:].tolist():
        after = [e for e in eligible if e >= s]
        if after:
            picks.add(after[0])
    return sorted(picks)


def _first_difference(side: str, got: Levels, want: Levels) -> str:
    for k, (g, w) in enumerate(zip(got, want, strict=False)):
        if g != w:
            return f"{side}[{k}]: lake {g} != cryptofeed {w}"
    return f"{side}: lake has {len(got)} levels, cryptofeed {len(want)}"


async def _reference(
    captures: Path, exchange: str, symbols: list[str], wanted: dict[str, set[int]], feed_kwargs: dict[str, Any]
) -> tuple[dict[str, list[RefEvent]], dict[str, int]]:
    events: dict[str, list[RefEvent]] = {s: [] for s in symbols}

    async def record(book: Any, receipt_timestamp: float) -> None:
        # cryptofeed hands the same, mutated OrderBook to every callback: copy what is needed now.
        mine = events.setdefault(book.symbol, [])
        keep = len(mine) in wanted.get(book.symbol, ())
        snapshot = book.delta is None
        full = (_levels(book.book.bids.to_list()), _levels(book.book.asks.to_list())) if keep or snapshot else None
        row = (_levels(book.delta[BID]), _levels(book.delta[ASK])) if full is None or not snapshot else full
        mine.append(RefEvent(book.timestamp, book.sequence_number, snapshot, *row, full if keep else None))

    run = await replay_feed(
        captures, exchange, callbacks={CHANNEL: record}, subscription={CHANNEL: symbols}, feed_kwargs=feed_kwargs
    )
    return events, run.counts


@dataclass
class SvoeRun:
    symbols: list[str]
    manifest: Path
    lake_dir: Path
    res: subprocess.CompletedProcess[str]


def _svoe_run(exchange: str, captures: Path, tmp: Path, env: dict[str, str]) -> SvoeRun:
    """The capture through `svoe run`, l2_book only, default (full) book depth."""
    symbols = capture_subscription(captures, exchange).get(CHANNEL, [])
    lake_dir = tmp / "lake"
    doc = capture_manifest(captures, exchange, str(lake_dir))
    doc["spec"]["channels"] = [CHANNEL]
    doc["spec"]["symbols"] = symbols
    manifest = write_manifest(tmp / "feed.yaml", doc)
    res = subprocess.run(
        [sys.executable, "-m", "svoe.cli", "run", str(manifest), "--replay", str(captures), "--lake", str(lake_dir),
         "--metrics-port", "0"],
        capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    return SvoeRun(symbols, manifest, lake_dir, res)


@pytest.fixture(scope="module")
def svoe_runs(
    request: pytest.FixtureRequest, captures: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], SvoeRun]]:
    """Starts the `svoe run` of every selected exchange, in test order; yields a lookup that waits
    for one exchange's. Off the main thread the environment is a fixed copy of what the autouse
    _isolated_dirs fixture sets, since the main thread's monkeypatch changes os.environ."""
    env = thread_env(tmp_path_factory)
    pool = ThreadPoolExecutor(RUN_THREADS, thread_name_prefix="svoe-run")
    futures: dict[str, Future[SvoeRun]] = {
        ex: pool.submit(_svoe_run, ex, captures, tmp_path_factory.mktemp(f"book-{ex}"), env)
        for ex in selected_params(request, "exchange")
    }
    yield lambda exchange: futures[exchange].result(timeout=280)
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.slow
@pytest.mark.parametrize("exchange", _book_exchanges())
def test_lake_book_at_equals_cryptofeed_book(
    exchange: str, captures: Path, svoe_runs: Callable[[str], SvoeRun]
) -> None:
    expected = reference_counts(captures)[exchange][CHANNEL]
    subscription = capture_subscription(captures, exchange)
    assert CHANNEL in subscription, f"{exchange}: README counts l2_book but the capture subscribes {subscription}"
    symbols = subscription[CHANNEL]

    # ---- svoe: the capture through `svoe run`, l2_book only, default (full) book depth ----------
    run = svoe_runs(exchange)
    assert run.symbols == symbols
    lake_dir = run.lake_dir
    spec = load_manifest(run.manifest).spec
    assert spec.book.depth == 0 and spec.book.snapshot_interval == 0, spec.book
    assert run.res.returncode == 0, run.res.stderr[-3000:]

    lake = Lake(str(lake_dir))
    table = lake.read(CHANNEL, exchange=exchange, symbols=symbols)  # view order: per symbol, event order
    assert table.num_rows == expected, f"{exchange}: {table.num_rows} l2_book events in the lake, README {expected}"
    rows = {s: table.filter(pc.equal(table["symbol"], s)) for s in symbols}
    receipt = {s: t["receipt_timestamp"].to_numpy(zero_copy_only=False) for s, t in rows.items()}
    eligible = {s: _eligible(r) for s, r in receipt.items()}
    spread = max(1, math.ceil(PICKS_PER_EXCHANGE / len(symbols)) - 2)
    picks = {s: _chosen(eligible[s], rows[s]["snapshot"].to_pylist(), spread) for s in symbols}
    assert sum(map(len, picks.values())) >= 5, picks

    # The CLI, once, on the final book of the busiest symbol: started now, it runs alongside the rest.
    cli_sym = max(symbols, key=lambda s: (rows[s].num_rows, s))
    cli_row = picks[cli_sym][-1]
    cli_at = float(receipt[cli_sym][cli_row])
    cli = subprocess.Popen(
        [sys.executable, "-m", "svoe.cli", "lake", "book", str(lake_dir), "--exchange", exchange,
         "--symbol", cli_sym, "--at", repr(cli_at), "--depth", str(CLI_DEPTH), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # ---- reference: unmodified cryptofeed, with the options svoe's collector gives it -------
        # (svoe/feedpod/collector.py: checksum_validation=False, max_depth=spec.book.depth)
        feed_kwargs = {"checksum_validation": False, "max_depth": spec.book.depth}
        wanted = {s: set(p) for s, p in picks.items()}
        ref, counts = asyncio.run(_reference(captures, exchange, symbols, wanted, feed_kwargs))
        assert counts == {CHANNEL: expected}, counts
        assert set(ref) == set(symbols), sorted(ref)

        # ---- the pairing, proven row by row -----------------------------------------------------
        for sym in symbols:
            lake_rows, ref_events = rows[sym].to_pylist(), ref[sym]
            assert len(lake_rows) == len(ref_events), (
                f"{exchange} {sym}: {len(lake_rows)} events in the lake, {len(ref_events)} cryptofeed callbacks"
            )
            for i, (row, ev) in enumerate(zip(lake_rows, ref_events, strict=True)):
                where = f"{exchange} {sym} event {i}"
                assert row["timestamp"] == ev.timestamp, f"{where}: timestamp {row['timestamp']} != {ev.timestamp}"
                assert row["sequence_number"] == ev.sequence_number, (
                    f"{where}: sequence_number {row['sequence_number']} != {ev.sequence_number}"
                )
                assert row["snapshot"] == ev.snapshot, f"{where}: snapshot {row['snapshot']} != {ev.snapshot}"
                bids = _row_levels(row["bid_price"], row["bid_size"])
                asks = _row_levels(row["ask_price"], row["ask_size"])
                assert bids == ev.bids, f"{where}: {_first_difference('row bids', bids, ev.bids)}"
                assert asks == ev.asks, f"{where}: {_first_difference('row asks', asks, ev.asks)}"

        # ---- the book at each chosen event ------------------------------------------------------
        for sym in symbols:
            for i in picks[sym]:
                at = float(receipt[sym][i])
                want = ref[sym][i].book
                assert want is not None
                want_bids, want_asks = want
                where = f"{exchange} {sym} after event {i} (at {at!r})"
                assert all(s > 0 for _, s in want_bids + want_asks), f"{where}: cryptofeed's book holds a size <= 0"
                got = lake.book(exchange, sym, at=at)
                assert got["bids"] == want_bids, f"{where}: {_first_difference('bids', got['bids'], want_bids)}"
                assert got["asks"] == want_asks, f"{where}: {_first_difference('asks', got['asks'], want_asks)}"

        stdout, stderr = cli.communicate(timeout=120)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
    assert cli.returncode == 0, stderr[-3000:]
    shown = json.loads(stdout)
    want = ref[cli_sym][cli_row].book
    assert want is not None
    top_bids, top_asks = want[0][:CLI_DEPTH], want[1][:CLI_DEPTH]
    assert (shown["exchange"], shown["symbol"], shown["at"]) == (exchange, cli_sym, repr(cli_at))
    assert shown["bids"] == top_bids, _first_difference("cli bids", shown["bids"], top_bids)
    assert shown["asks"] == top_asks, _first_difference("cli asks", shown["asks"], top_asks)
