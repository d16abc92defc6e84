"""The faults ``bench soak`` injects, one per minute in turn, and its final count of
what the stream lost or stored twice."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import ray

from serve_ml.bench.producer import SteadyProducer
from serve_ml.pipelines.stack import Stack


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


@dataclass
class BrokerOutage:
    """When the fault began, when the old broker process had exited, when the new one
    listened. The old broker can still acknowledge writes while it shuts down."""

    began: float
    old_exited: float = 0.0
    new_up: float = 0.0


BROKER_OUTAGES: list[BrokerOutage] = []


def restart_broker(stack: Stack, _cluster: Any) -> str:
    if stack.kafka is None:
        return "skipped (external broker)"
    outage = BrokerOutage(time.monotonic())
    BROKER_OUTAGES.append(outage)
    stack.kafka.stop()
    outage.old_exited = time.monotonic()
    time.sleep(3.0)
    stack.restart_broker()
    outage.new_up = time.monotonic()
    return (f"broker stopped in {outage.old_exited - outage.began:.1f} s, down 3 s, "
            f"back in {outage.new_up - outage.old_exited:.1f} s")


FAULTS: list[tuple[str, Callable[[Stack, Any], str]]] = [
    ("stream actor kill", kill_stream_actor), ("replica kill", kill_equipment_replica),
    ("PostgreSQL stop", stop_postgres), ("broker restart", restart_broker)]


class DeadLetterWatcher:
    """Reads the dead-letter topic for the whole soak (the in-memory broker forgets it
    on restart, so reading it at the end would miss some): which readings were
    refused, and why."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.refused: dict[tuple[str, dt.datetime], str] = {}
        self.unparsed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            while not self._stop.is_set():
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        self._record(r.value, dict(r.headers).get("reason", b"").decode(errors="replace"))
        finally:
            await consumer.stop()

    def _record(self, value: bytes | None, reason: str) -> None:
        try:
            doc = orjson.loads(value or b"")
            self.refused[(doc["equipment_id"], dt.datetime.fromisoformat(doc["ts"]))] = reason
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.unparsed += 1

    def __enter__(self) -> DeadLetterWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


async def _stored(url: str, eq: str, since: dt.datetime) -> list[dt.datetime]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT time FROM serve_ml_readings WHERE equipment_id = $1 AND time >= $2",
                                eq, since)
    finally:
        await conn.close()
    return [r["time"] for r in rows]


def lost_and_duplicated(stack: Stack, producer: SteadyProducer, dead: DeadLetterWatcher, since: dt.datetime,
                        window_s: float, timeout_s: float = 180.0) -> dict[str, Any]:
    """Wait for the stream to drain, then compare stored readings with acknowledged ones.

    An acknowledged reading that is not stored was either refused (in the dead-letter
    topic, with its reason), lost with the in-memory broker (acknowledged by the old
    broker: within ``window_s`` before a restart began, or while it shut down), or
    lost: the figure that must be zero.
    """
    def in_broker_window(at: float) -> bool:
        return any(o.began - window_s <= at <= o.old_exited for o in BROKER_OUTAGES)

    def explain(at: float) -> str:
        if not BROKER_OUTAGES:
            return ""
        o = min(BROKER_OUTAGES, key=lambda o: abs(at - o.began))
        return f" (acked {at - o.began:+.1f} s from a broker restart's start; new broker up at " \
               f"{o.new_up - o.began:+.1f} s)"

    acked = producer.acked_by_equipment()
    deadline = time.monotonic() + timeout_s
    while True:
        stored = {eq: asyncio.run(_stored(stack.database_url, eq, since)) for eq in acked}
        have = {eq: set(times) for eq, times in stored.items()}
        missing = [(eq, ts, at) for eq, acks in acked.items()
                   for ts, at in acks if ts not in have[eq]]
        refused = Counter(dead.refused[(eq, ts)] for eq, ts, _ in missing if (eq, ts) in dead.refused)
        in_broker = sum(1 for eq, ts, at in missing if (eq, ts) not in dead.refused and in_broker_window(at))
        lost = [(eq, ts, at) for eq, ts, at in missing if (eq, ts) not in dead.refused and not in_broker_window(at)]
        if not lost or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    return {"acked": len(producer.acked),
            "stored": sum(len(s) for s in stored.values()),
            "duplicated": sum(n - 1 for s in stored.values() for n in Counter(s).values()),
            "dead_lettered": sum(refused.values()), "dead_letter_reasons": dict(refused.most_common(5)),
            "lost": len(lost), "lost_examples": [f"{eq}@{ts.isoformat()}{explain(at)}" for eq, ts, at in lost[:5]],
            "lost_in_broker": in_broker}
