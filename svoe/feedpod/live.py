"""Live stream: every normalized event on a ZMQ PUB socket.

Frames: [topic, payload, id]. The topic is `EXCHANGE.channel.SYMBOL`, so a subscriber can filter
by prefix (`BINANCE.trades.`). The payload is the event as the buffer holds it, a JSON array whose
fields are listed per channel in events.CHANNEL_FIELDS (`svoe.feedpod.events.decode` names them). The id
is the event's stream id (the lake's `svoe_id`): after an aggregator restart a few events may be
published again, and the id lets a subscriber drop them.
Live is best effort: a slow subscriber loses messages past ZMQ's high-water mark; the lake is the
complete record.
"""

from __future__ import annotations

import zmq

_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
_LAST = int(zmq.NOBLOCK)


def topic(exchange: str, channel: str, symbol: str) -> bytes:
    return f"{exchange}.{channel}.{symbol}".encode()


class LivePublisher:
    def __init__(self, bind: str, port: int, hwm: int = 100_000) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.bind(f"tcp://{bind}:{port}")

    def publish(self, topic: bytes, payload: bytes, entry_id: bytes) -> None:
        # Frame by frame with precomputed int flags: send_multipart's per-frame enum arithmetic
        # cost more than the sends themselves (profiled: 13 of 16 us per event).
        send = self.sock.send
        try:
            send(topic, _MORE)
            send(payload, _MORE)
            send(entry_id, _LAST)
        except zmq.Again:
            pass

    def close(self) -> None:
        self.sock.close()
