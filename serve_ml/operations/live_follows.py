"""Which equipment someone follows live. Each live-application replica's WebSocket
hub advertises the equipment its clients follow, a row per hub and equipment that it
renews while they are followed and that expires when the hub goes away without a
word; the stream writers read the set once a second and build and notify live
messages for those equipment only (``pipelines.live``).

A live message costs the writer about 55 µs to build, PostgreSQL a notification and
every hub a parse, whether anyone watches or not: a fleet of a thousand machines
with a handful on screens would otherwise pay for a thousand.
"""

from __future__ import annotations

from collections.abc import Collection

import asyncpg

from serve_ml.operations.follow import poll

FOLLOW_TTL_S = 30.0
"""How long an advertisement lasts unless renewed (hubs renew every third of it)."""
AUDIENCE_REFRESH_S = 1.0

LIVE_FOLLOWS_DDL = """
CREATE TABLE serve_ml_live_follows (
    hub          text NOT NULL,
    equipment_id text NOT NULL,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (hub, equipment_id)
);
"""


async def advertise(conn: asyncpg.Connection, hub: str, equipment_ids: Collection[str],
                    ttl_s: float = FOLLOW_TTL_S) -> None:
    """``hub`` follows exactly ``equipment_ids`` for the next ``ttl_s`` (and drops
    what every hub let expire)."""
    ids = sorted(equipment_ids)
    async with conn.transaction():
        await conn.execute("DELETE FROM serve_ml_live_follows WHERE expires_at < now() "
                           "OR (hub = $1 AND NOT (equipment_id = ANY($2::text[])))", hub, ids)
        if ids:
            await conn.execute(
                "INSERT INTO serve_ml_live_follows (hub, equipment_id, expires_at) "
                "SELECT $1, e, now() + make_interval(secs => $3) FROM unnest($2::text[]) AS e "
                "ON CONFLICT (hub, equipment_id) DO UPDATE SET expires_at = excluded.expires_at", hub, ids, ttl_s)


async def withdraw(conn: asyncpg.Connection, hub: str) -> None:
    """``hub`` follows nothing any more (a hub closing)."""
    await conn.execute("DELETE FROM serve_ml_live_follows WHERE hub = $1", hub)


async def followed(conn: asyncpg.Connection) -> frozenset[str]:
    """The equipment some hub follows now."""
    return frozenset(r[0] for r in await conn.fetch(
        "SELECT DISTINCT equipment_id FROM serve_ml_live_follows WHERE expires_at > now()"))


class LiveAudience:
    """A stream writer's view of :func:`followed`, read every ``AUDIENCE_REFRESH_S``:
    a client that starts following gets its first message within about a second.
    Until the first read succeeds, nobody follows."""

    def __init__(self) -> None:
        self.equipment: frozenset[str] = frozenset()

    async def refresh(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn:
            self.equipment = await followed(conn)

    async def run(self, pool: asyncpg.Pool, interval_s: float = AUDIENCE_REFRESH_S) -> None:
        await poll(lambda: self.refresh(pool), interval_s, "live audience")
