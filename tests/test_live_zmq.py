"""A ZMQ subscriber receives every event of a replay: its count equals the reference."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import zmq

from svoe.feedpod.events import FEED_EVENTS, FEED_SYMBOL, decode
from svoe.net import free_port
from svoe.replay import reference_counts
from tests.pipeline_support import capture_manifest, svoe, write_manifest


def test_zmq_subscriber_receives_every_event(captures: Path, tmp_path: Path) -> None:
    exchange = "BITFINEX"
    port = free_port()
    doc = capture_manifest(captures, exchange, str(tmp_path / "lake"), live={"enabled": True, "port": port})
    manifest = write_manifest(tmp_path / "feed.yaml", doc)

    counts: Counter[str] = Counter()
    feed_kinds: list[str] = []
    ids: set[tuple[bytes, bytes]] = set()
    topics_ok = True
    stop = threading.Event()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 200)
    sub.connect(f"tcp://127.0.0.1:{port}")  # before the publisher binds: ZMQ connects when it appears

    def listen() -> None:
        nonlocal topics_ok
        while not stop.is_set():
            try:
                topic, payload, entry_id = sub.recv_multipart()
            except zmq.Again:
                continue
            ex, channel, symbol = topic.decode().split(".", 2)
            if channel == FEED_EVENTS:  # the feed's own events go live too, under EX.feed_events._feed
                feed_kinds.append(decode(channel, payload)["kind"])
                topics_ok &= symbol == FEED_SYMBOL
                continue
            topics_ok &= ex == exchange and symbol in doc["spec"]["symbols"]
            decode(channel, payload)  # every payload decodes with the channel's field list
            ids.add((topic, entry_id))
            counts[channel] += 1

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    res = svoe("run", str(manifest), "--replay", str(captures), "--metrics-port", "0")
    time.sleep(0.5)
    stop.set()
    t.join()
    sub.close()
    ctx.term()
    assert res.returncode == 0, res.stderr[-2000:]
    expected = {ch: n for ch, n in reference_counts(str(captures))[exchange].items() if n}
    assert dict(counts) == expected
    assert topics_ok
    assert len(ids) == sum(counts.values())  # each event once, with its stream id
    assert feed_kinds[:2] == ["start", "connect"], feed_kinds
