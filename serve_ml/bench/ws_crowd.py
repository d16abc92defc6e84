"""A crowd of WebSocket clients for ``bench stream --ws-clients N``, run as its own
process (``python -m serve_ml.bench.ws_crowd ADDRESS N EQ[,EQ...]``): N clients
spread over the equipment ids' live streams, each reading what it is pushed. It
prints ``ready`` once every client is subscribed and, when its standard input
closes, one JSON line: clients connected, messages received, clients closed early,
and the CPU seconds this process used.

The clients negotiate permessage-deflate as browsers do, so the server pays the
compression it pays in production. They cost no more than a client must: each waits
on its socket (no timer per client; closing standard input closes them all) and
counts the raw frame without decoding it. On a real floor they run on other hosts;
here they share the bench's cores, and the CPU they report is what that costs."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

import orjson


async def crowd(address: str, n: int, equipment_ids: list[str]) -> dict[str, Any]:
    import websockets

    counts: dict[str, Any] = {"clients": 0, "subscribed": 0, "messages": 0, "closed": 0}
    subscribed = asyncio.Event()
    stopping = False
    sockets: list[Any] = []

    async def client(k: int) -> None:
        eq = equipment_ids[k % len(equipment_ids)]
        try:
            async with websockets.connect(f"ws://{address}/api/v1/serve-ml/ws/equipment/{eq}",
                                          open_timeout=60, ping_interval=None, max_queue=None) as ws:
                counts["clients"] += 1
                sockets.append(ws)
                if b'"subscribed"' not in await ws.recv(decode=False):
                    raise RuntimeError("the first message was not the subscription")
                counts["subscribed"] += 1
                if counts["subscribed"] == n:
                    subscribed.set()
                while True:
                    await ws.recv(decode=False)
                    counts["messages"] += 1
        except Exception:  # noqa: BLE001 - a client refused or closed by the server is counted, not fatal
            if not stopping:
                counts["closed"] += 1

    tasks = [asyncio.create_task(client(k)) for k in range(n)]
    watcher = asyncio.create_task(asyncio.to_thread(sys.stdin.read))
    # ready when all are subscribed, or after two minutes with those that are
    await asyncio.wait({asyncio.create_task(subscribed.wait()), watcher}, timeout=120,
                       return_when=asyncio.FIRST_COMPLETED)
    print("ready", flush=True)
    cpu0 = time.process_time()  # from here on: the round the bench times
    await watcher
    counts["cpu_s"] = round(time.process_time() - cpu0, 3)
    stopping = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True), 30)
    await asyncio.gather(*tasks)
    return counts


def main() -> None:
    address, n, eqs = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    print(orjson.dumps(asyncio.run(crowd(address, n, eqs))).decode(), flush=True)


if __name__ == "__main__":
    main()
