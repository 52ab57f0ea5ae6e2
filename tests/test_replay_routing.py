"""Routing by subscription in the replay exchange: what a real exchange does with several clients.

Pure decisions of svoe.replay.routing first; then real websocket clients against a ReplayServer;
then two cryptofeed-backed `svoe run`s of the same symbols against one replay process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from pathlib import Path

import pytest
import websockets

from svoe.replay import ReplayServer, load_capture
from svoe.replay.routing import NAMINGS, Lane, Router, split_lanes
from svoe.replay.sequencing import loads_message
from tests.conftest import CAPTURES

FUTURES = "BINANCE_FUTURES"


@pytest.fixture(scope="module")
def capture_dir() -> Path:
    if not (CAPTURES / "README.md").is_file():
        pytest.fail(f"capture directory missing at {CAPTURES}; set SVOE_CAPTURES to ../shared/captures")
    return CAPTURES


def _lanes(*names: str | None, routed: bool = True) -> list[Lane]:
    return [Lane(i, 0, "/stream", n, (2 * i, 2 * i + 1), routed) for i, n in enumerate(names)]


def _time(lane: Lane, message: int, loop: int) -> float:
    return float(message)


# -- pure decisions ----------------------------------------------------------------------------------


def test_subscriptions_and_stream_names_come_from_the_declared_naming() -> None:
    naming = NAMINGS[FUTURES]
    assert naming.subscription({"streams": "a@x/b@y"}) == {"a@x", "b@y"}
    assert naming.subscription({}) is None  # no parameter: every stream
    assert naming.stream_of('{"stream":"a@x","data":{}}', loads_message) == "a@x"
    assert naming.stream_of('{"data":{},"stream":"b@y"}', loads_message) == "b@y"
    assert naming.stream_of('{"result":null,"id":1}', loads_message) is None


def test_broadcast_to_every_subscriber_and_held_without_one() -> None:
    router = Router(_lanes("x", "y", None))
    assert router.next_lane(_time) is None  # nobody subscribed: everything held
    joined = router.connect(1, "/stream", frozenset({"x"}), now=0.0)
    assert [lane.name for lane in joined] == ["x", None]  # unnamed messages go to every connection
    router.connect(2, "/stream", frozenset({"x", "y"}), now=0.0)
    x, y, unnamed = router.lanes
    assert router.receivers(x) == (1, 2) and router.receivers(y) == (2,) and router.receivers(unnamed) == (1, 2)
    router.disconnect(2, now=1.0)
    assert router.receivers(y) == () and router.lane_stats()["y"]["held"]
    # the held lane keeps its position and its clock stops while held
    assert router.next_lane(_time) is x
    router.connect(3, "/stream", frozenset({"y"}), now=4.0)
    assert router.offset(y) == 3.0 and router.head(y) == (2, 0)


def test_a_late_joiner_starts_at_the_current_position() -> None:
    router = Router(_lanes("x"))
    router.connect(1, "/stream", frozenset({"x"}), now=0.0)
    (x,) = router.lanes
    router.advance(x, sent=True)
    assert [lane.name for lane in router.connect(2, "/stream", frozenset({"x"}), now=1.0)] == ["x"]
    assert router.upcoming(x) == (1,) and router.receivers(x) == (1, 2)
    assert router.advance(x, sent=True) and router.exhausted  # every lane sent to its end


def test_unrouted_exchanges_serve_each_recorded_connection_once() -> None:
    router = Router(_lanes(None, routed=False))
    (lane,) = router.lanes
    router.connect(1, "/other", None, now=0.0)
    router.connect(2, "/stream", None, now=0.0)
    assert router.receivers(lane) == (1,)  # the owner stays until it closes
    assert router.disconnect(1, now=1.0) == [lane] and router.receivers(lane) == (2,)  # handed on


# -- websocket clients against a ReplayServer ----------------------------------------------------------


def _recorded(capture_dir: Path) -> dict[str, list[str]]:
    stream = load_capture(capture_dir, FUTURES).streams[0]
    lanes = split_lanes([stream], NAMINGS[FUTURES], loads_message)
    return {str(lane.name): [str(stream.messages[i].data) for i in lane.messages] for lane in lanes}


async def _client(server: ReplayServer, streams: list[str], until: int, got: list[str]) -> None:
    ctx = ssl.create_default_context(cafile=server.ca_file)
    async with websockets.connect(f"{server.ws_base}/stream?streams={'/'.join(streams)}", ssl=ctx) as ws:
        while len(got) < until:
            got.append(str(await asyncio.wait_for(ws.recv(), 10)))


def _by_stream(got: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for data in got:
        out.setdefault(json.loads(data)["stream"], []).append(data)
    return out


def test_overlapping_subscribers_each_get_every_message_of_their_streams(capture_dir: Path) -> None:
    recorded = _recorded(capture_dir)
    a = ["sushiusdt@aggTrade", "sushiusdt@depth@100ms", "akrousdt@bookTicker"]
    b = ["sushiusdt@depth@100ms", "akrousdt@bookTicker", "ctkusdt@kline_1m"]

    async def go() -> tuple[list[str], list[str], dict[str, object]]:
        got_a: list[str] = []
        got_b: list[str] = []
        async with ReplayServer(capture_dir, FUTURES, clients=2) as server:
            await asyncio.gather(
                _client(server, a, sum(len(recorded[s]) for s in a), got_a),
                _client(server, b, sum(len(recorded[s]) for s in b), got_b),
            )
            return got_a, got_b, server.stats()

    got_a, got_b, stats = asyncio.run(go())
    assert _by_stream(got_a) == {s: recorded[s] for s in a}  # in order, once, nothing else
    assert _by_stream(got_b) == {s: recorded[s] for s in b}
    streams = stats["streams"]
    assert isinstance(streams, dict)
    assert all(streams[s]["done"] for s in {*a, *b})
    # nobody subscribed to these: held at the start, not dropped
    assert streams["keepusdt@aggTrade"] == {**streams["keepusdt@aggTrade"], "position": 0, "held": True}
    assert stats["exhausted"]  # every subscribed stream is sent: the held ones are not owed


def test_late_joiner_gets_the_stream_from_the_current_position(capture_dir: Path) -> None:
    name = "sushiusdt@bookTicker"
    recorded = _recorded(capture_dir)[name]

    async def go() -> tuple[list[str], list[str]]:
        first: list[str] = []
        late: list[str] = []
        async with ReplayServer(capture_dir, FUTURES, speed=25.0, settle=0.0) as server:
            early = asyncio.create_task(_client(server, [name], len(recorded), first))
            while len(first) < 40:
                await asyncio.sleep(0.01)
            joiner = asyncio.create_task(_client(server, [name], len(recorded), late))
            await early
            await asyncio.sleep(0.3)
            joiner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await joiner
            return first, late

    first, late = asyncio.run(go())
    assert first == recorded
    assert 10 < len(late) < len(recorded) - 40
    assert late == recorded[len(recorded) - len(late) :]  # the current position onwards, in order


def test_a_stream_nobody_subscribes_to_waits_for_its_first_subscriber(capture_dir: Path) -> None:
    recorded = _recorded(capture_dir)
    x, y = "ctkusdt@aggTrade", "keepusdt@kline_1m"

    async def go() -> tuple[list[str], list[str], bool]:
        got_x: list[str] = []
        got_y: list[str] = []
        async with ReplayServer(capture_dir, FUTURES, settle=0.0) as server:
            await _client(server, [x], len(recorded[x]), got_x)
            await asyncio.sleep(0.2)  # the whole capture could have been sent by now; y's was not
            assert server.stats()["streams"][y]["position"] == 0
            await _client(server, [y], len(recorded[y]), got_y)
            return got_x, got_y, server.exhausted.is_set()

    got_x, got_y, exhausted = asyncio.run(go())
    assert (got_x, got_y) == (recorded[x], recorded[y])
    assert exhausted  # both subscribed streams are sent; the others, held, are not owed


# -- two cryptofeed collectors against one replay -----------------------------------------------------


# Two collectors of the same symbols against one replay, merged exactly by the lake's view: the
# e2e's replicas scenario (e2e/local/test_replicas_e2e.py) runs it with real feed pods.
