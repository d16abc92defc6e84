"""The faults ``bench soak`` injects, one per minute in turn, and its final count of
what the stream lost or stored twice."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import asyncpg
import ray

from pipelines.stack import Stack
from serve_ml.bench.producer import SteadyProducer


def kill_stream_actor(stack: Stack, _cluster: Any) -> str:
    ray.kill(stack.scorers[0], no_restart=False)  # Ray restarts it and retries run()
    return "stream actor killed"


def kill_equipment_replica(_stack: Stack, _cluster: Any, eq: str = "press-02") -> str:
    prefix = f"SERVE_REPLICA::serve-ml#equipment-{eq}#"
    names = [a["Name"] for a in ray._private.state.actors().values()  # noqa: SLF001 - no dashboard needed
             if a["State"] == "ALIVE" and a["Name"].startswith(prefix)]
    for name in names:
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)  # Serve starts a replacement
    return f"{len(names)} replica(s) of {eq} killed"


def stop_postgres(stack: Stack, _cluster: Any, down_s: float = 10.0) -> str:
    if stack.postgres is None:
        return "skipped (external database)"
    stack.postgres.stop()
    try:
        time.sleep(down_s)
    finally:
        stack.postgres.start()
    return f"PostgreSQL stopped for {down_s:g} s"


def restart_broker(stack: Stack, _cluster: Any) -> str:
    if stack.kafka is None:
        return "skipped (external broker)"
    stack.kafka.stop()
    time.sleep(3.0)
    stack.restart_broker()
    return "broker down 3 s, restarted"


FAULTS: list[tuple[str, Callable[[Stack, Any], str]]] = [
    ("stream actor kill", kill_stream_actor), ("replica kill", kill_equipment_replica),
    ("PostgreSQL stop", stop_postgres), ("broker restart", restart_broker)]


async def _stored(url: str, eq: str, since: dt.datetime) -> list[dt.datetime]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT time FROM serve_ml_readings WHERE equipment_id = $1 AND time >= $2",
                                eq, since)
    finally:
        await conn.close()
    return [r["time"] for r in rows]


def lost_and_duplicated(stack: Stack, producer: SteadyProducer, since: dt.datetime, broker_restarts: list[float],
                        window_s: float, timeout_s: float = 180.0) -> dict[str, int]:
    """Wait for the stream to drain, then compare stored readings with acknowledged ones.

    A reading lost with its acknowledgement in the ``window_s`` before a broker
    restart is attributed to the in-memory broker; any other loss is a real one.
    """
    def in_broker_window(at: float) -> bool:
        return any(r - window_s <= at <= r for r in broker_restarts)

    deadline = time.monotonic() + timeout_s
    while True:
        stored = {eq: asyncio.run(_stored(stack.database_url, eq, since)) for eq in producer.acked_by_equipment}
        have = {eq: set(times) for eq, times in stored.items()}
        missing = {eq: [(ts, at) for ts, at in acks if ts not in have[eq]]
                   for eq, acks in producer.acked_by_equipment.items()}
        real = sum(1 for m in missing.values() for _, at in m if not in_broker_window(at))
        if real == 0 or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    lost_in_broker = sum(1 for m in missing.values() for _, at in m if in_broker_window(at))
    return {"acked": sum(len(a) for a in producer.acked_by_equipment.values()),
            "stored": sum(len(s) for s in stored.values()),
            "duplicated": sum(n - 1 for s in stored.values() for n in Counter(s).values()),
            "lost": real, "lost_in_broker": lost_in_broker}
