"""Outbox relay: publishes alert events written in the prediction transaction.

At-least-once: a row is marked sent only after Kafka acknowledged it, so an event
survives a crash between the database write and the publish (it may then be
published twice; consumers deduplicate on ``alert_id`` + ``event``).
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from aiokafka import AIOKafkaProducer

log = logging.getLogger("serve_ml.outbox")


async def relay_once(pool: asyncpg.Pool, producer: AIOKafkaProducer, limit: int = 500) -> int:
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch("SELECT id, topic, key, payload::text AS payload FROM serve_ml_outbox "
                                "WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED", limit)
        if not rows:
            return 0
        futures = [await producer.send(r["topic"], r["payload"].encode(), key=(r["key"] or "").encode())
                   for r in rows]
        await asyncio.gather(*futures)
        await conn.execute("UPDATE serve_ml_outbox SET sent_at = now() WHERE id = ANY($1::bigint[])",
                           [r["id"] for r in rows])
    return len(rows)


async def run_relay(pool: asyncpg.Pool, producer: AIOKafkaProducer, wake: asyncio.Event,
                    idle_s: float = 0.5) -> None:
    """Loop forever: relay whenever woken (a write created rows) or every ``idle_s``."""
    while True:
        try:
            while await relay_once(pool, producer):
                pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # database or broker away: retry on the next tick
            log.warning("outbox relay: %s", exc)
        try:
            await asyncio.wait_for(wake.wait(), idle_s)
        except TimeoutError:
            pass
        wake.clear()
