"""A crowd of WebSocket clients for ``bench stream --ws-clients N``, run as its own
process (``python -m serve_ml.bench.ws_crowd ADDRESS N EQ[,EQ...]``): N clients
spread over the equipment ids' live streams, each reading what it is pushed. It
prints ``ready`` once every client is subscribed and, when its standard input
closes, one JSON line: clients connected, messages received, clients closed early."""

from __future__ import annotations

import asyncio
import sys

import orjson


async def crowd(address: str, n: int, equipment_ids: list[str]) -> dict[str, int]:
    import websockets

    counts = {"clients": 0, "subscribed": 0, "messages": 0, "closed": 0}
    subscribed = asyncio.Event()
    stop = asyncio.Event()

    async def client(k: int) -> None:
        eq = equipment_ids[k % len(equipment_ids)]
        try:
            async with websockets.connect(f"ws://{address}/api/v1/serve-ml/ws/equipment/{eq}",
                                          open_timeout=60, ping_interval=None, max_queue=None) as ws:
                counts["clients"] += 1
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 1.0)
                    except TimeoutError:
                        continue
                    if b'"subscribed"' in (raw if isinstance(raw, bytes) else raw.encode()):
                        counts["subscribed"] += 1
                        if counts["subscribed"] == n:
                            subscribed.set()
                    else:
                        counts["messages"] += 1
        except Exception:  # noqa: BLE001 - a client refused or closed is counted, not fatal
            counts["closed"] += 1

    async def stdin_closed() -> None:
        await asyncio.to_thread(sys.stdin.read)
        stop.set()

    tasks = [asyncio.create_task(client(k)) for k in range(n)]
    watcher = asyncio.create_task(stdin_closed())
    # ready when all are subscribed, or after two minutes with those that are
    await asyncio.wait({asyncio.create_task(subscribed.wait()), watcher}, timeout=120,
                       return_when=asyncio.FIRST_COMPLETED)
    print("ready", flush=True)
    await watcher
    await asyncio.gather(*tasks)
    return counts


def main() -> None:
    address, n, eqs = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    print(orjson.dumps(asyncio.run(crowd(address, n, eqs))).decode(), flush=True)


if __name__ == "__main__":
    main()
