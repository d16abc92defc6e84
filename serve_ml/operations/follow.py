"""Keeps a threshold book in step with the database (the stream scorers' and the
ingress replicas'): one cheap read of ``ops_generation`` a second, a reload of the
thresholds and registry only when an operator changed them. A change applies
within about a second."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from serve_ml.operations.db import generation
from serve_ml.operations.threshold_store import load_book
from serve_ml.operations.thresholds import EMPTY_BOOK, ThresholdBook

log = logging.getLogger("serve_ml.operations")
FOLLOW_INTERVAL_S = 1.0


async def poll(refresh: Callable[[], Awaitable[object]], interval_s: float, what: str) -> None:
    """``refresh()`` every ``interval_s`` until cancelled. A failure (the database
    away) is logged, and whatever the last refresh loaded stays in force."""
    while True:
        try:
            await refresh()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s refresh: %s", what, exc)
        await asyncio.sleep(interval_s)


class OpsFollower:
    def __init__(self) -> None:
        self.book: ThresholdBook = EMPTY_BOOK
        self.generation: int | None = None
        self.reloads = 0

    async def refresh(self, pool: asyncpg.Pool) -> bool:
        """Reload when the generation moved; True when it did."""
        async with pool.acquire() as conn:
            gen = await generation(conn)
            if gen == self.generation:
                return False
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                gen = await generation(conn)
                book = await load_book(conn)
        self.book, self.generation = book, gen
        self.reloads += 1
        return True

    async def run(self, pool: asyncpg.Pool, interval_s: float = FOLLOW_INTERVAL_S) -> None:
        await poll(lambda: self.refresh(pool), interval_s, "threshold book")


class IngressBook:
    """The book an ingress replica applies to HTTP predictions: followed in the
    background from the first request on (nothing without a database)."""

    def __init__(self, pool: Callable[[], Awaitable[asyncpg.Pool]] | None) -> None:
        self._pool = pool
        self.follower = OpsFollower()
        self._task: asyncio.Task[None] | None = None

    def current(self) -> ThresholdBook:
        if self._pool is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self.follower.book

    async def _run(self) -> None:
        assert self._pool is not None
        while True:
            try:
                pool = await self._pool()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database not there yet
                log.debug("threshold book: %s", exc)
                await asyncio.sleep(5.0)
        await self.follower.run(pool)
