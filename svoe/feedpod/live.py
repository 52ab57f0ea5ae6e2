"""Live stream: every normalized event on a ZMQ PUB socket.

Frames: [topic, payload]. The topic is `EXCHANGE.channel.SYMBOL`, so a subscriber can filter by
prefix (`BINANCE.trades.`). The payload is the event's buffer entry, a JSON array whose fields are
listed per channel in events.CHANNEL_FIELDS (`svoe.feedpod.events.decode` names them).
Live is best effort: a slow subscriber loses messages past ZMQ's high-water mark; the lake is the
complete record.
"""

from __future__ import annotations

import zmq


def topic(exchange: str, channel: str, symbol: str) -> bytes:
    return f"{exchange}.{channel}.{symbol}".encode()


class LivePublisher:
    def __init__(self, bind: str, port: int, hwm: int = 100_000) -> None:
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.bind(f"tcp://{bind}:{port}")

    def publish(self, topic: bytes, payload: bytes) -> None:
        try:
            self.sock.send_multipart((topic, payload), flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            pass

    def close(self) -> None:
        self.sock.close()
