"""Runs a ReplayServer in its own process for tests: prints its endpoints as one JSON line, then
`exhausted` once the capture is fully sent.
Usage: python -m tests.replay_proc DIR EXCHANGE [SPEED|max [CLIENTS]]"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from svoe.replay import ReplayServer


async def main(capture_dir: str, exchange: str, speed: float | None, clients: int = 1) -> None:
    server = ReplayServer(capture_dir, exchange, speed=speed, clients=clients)
    await server.start()
    print(json.dumps({"websocket": server.ws_base, "rest": server.rest_base, "caFile": server.ca_file}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    waiter = asyncio.create_task(server.exhausted.wait())
    await asyncio.wait({waiter, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if server.exhausted.is_set():
        print("exhausted", flush=True)
        await stop.wait()
    await server.stop()


if __name__ == "__main__":
    speed = sys.argv[3] if len(sys.argv) > 3 else "max"
    clients = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    asyncio.run(main(sys.argv[1], sys.argv[2], None if speed == "max" else float(speed), clients))
