"""How the operations layer talks to PostgreSQL: a pool handed in by whoever owns
it (the ingress shares the read side's), database failures translated into the
project's errors, rows made JSON-ready.

Every change to the registry or the thresholds bumps ``ops_generation`` in
``serve_ml_meta`` in the same transaction: the stream scorers poll that one row
and reload their threshold book only when it moved.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

from serve_ml.core.errors import GatewayTimeout, InvalidQuery, Unavailable

PoolGetter = Callable[[], Awaitable[asyncpg.Pool]]
GENERATION_KEY = "ops_generation"
JSON_COLUMNS = frozenset({"metadata", "reasons", "detail", "previous", "current", "payload", "attempt_log", "rule"})
_DB_DOWN = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError)


class OpsDB:
    """The pool and the error translation every operations query goes through."""

    def __init__(self, pool: PoolGetter) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        pool = await self._pool()
        try:
            async with pool.acquire() as conn, conn.transaction():
                yield conn
        except (UnicodeEncodeError, asyncpg.DataError, asyncpg.CharacterNotInRepertoireError) as exc:
            raise InvalidQuery(f"a value cannot be stored: {type(exc).__name__}") from None
        except asyncpg.QueryCanceledError:
            raise GatewayTimeout("the database query ran past its time limit") from None
        except _DB_DOWN as exc:
            raise Unavailable(f"database unavailable: {type(exc).__name__}") from None

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async with self.transaction() as conn:
            return [jsonable(dict(r)) for r in await conn.fetch(sql, *args)]

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None


async def bump_generation(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO serve_ml_meta (key, value) VALUES ($1, '1') ON CONFLICT (key) "
        "DO UPDATE SET value = (serve_ml_meta.value::bigint + 1)::text", GENERATION_KEY)


async def generation(conn: asyncpg.Connection) -> int:
    value = await conn.fetchval("SELECT value FROM serve_ml_meta WHERE key = $1", GENERATION_KEY)
    return int(value) if value is not None else 0


async def record_change(conn: asyncpg.Connection, history_table: str, key: Mapping[str, str], action: str,
                        version: int, previous: dict[str, Any] | None, current: dict[str, Any] | None, *,
                        actor: str, reason: str) -> None:
    """One row of a versioned setting's history (thresholds, alarm rules): which
    setting (``key``: its scope, target and what it limits), what was done, the
    value before and after, who and why. ``history_table`` is one of ours, never input."""
    cols = [*key, "action", "version", "previous", "current", "actor", "reason"]
    marks = [f"${i}" + ("::jsonb" if c in ("previous", "current") else "") for i, c in enumerate(cols, 1)]
    await conn.execute(
        f"INSERT INTO {history_table} ({', '.join(cols)}) VALUES ({', '.join(marks)})",
        *key.values(), action, version, None if previous is None else orjson.dumps(previous).decode(),
        None if current is None else orjson.dumps(current).decode(), actor, reason)


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    for k, v in row.items():
        if isinstance(v, dt.datetime):
            row[k] = v.isoformat()
        elif isinstance(v, str) and k in JSON_COLUMNS:
            row[k] = orjson.loads(v)
    return row
