"""Schema migrations on the session's real PostgreSQL, each test in a database of its own."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import asyncpg
import pytest

from pipelines import schema
from pipelines.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture()
def fresh_db(stack: Stack) -> Iterator[str]:
    """A new, empty database on the stack's server; dropped afterwards."""
    name = "serve_ml_migration_test"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(stack.database_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"DROP DATABASE IF EXISTS {name}"))
    asyncio.run(admin(f"CREATE DATABASE {name}"))
    yield stack.database_url.replace("/postgres?", f"/{name}?")
    asyncio.run(admin(f"DROP DATABASE {name} WITH (FORCE)"))


async def _column_types(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT table_name || '.' || column_name AS c, data_type FROM information_schema.columns "
        "WHERE column_name IN ('features', 'modalities', 'fault_probabilities') "
        "AND table_name IN ('serve_ml_readings', 'serve_ml_predictions')")
    return {r["c"]: r["data_type"] for r in rows}


def test_fresh_database_gets_every_migration_once(fresh_db: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(fresh_db)
        try:
            assert await schema.migrate(conn) == schema.PARTITIONED
            applied = [r["version"] for r in await conn.fetch(
                "SELECT version FROM serve_ml_schema_migrations ORDER BY version")]
            assert applied == [v for v, _, _ in schema.MIGRATIONS]
            assert set((await _column_types(conn)).values()) == {"json"}
            await schema.migrate(conn)  # again: nothing left to apply, nothing fails
            assert await conn.fetchval("SELECT count(*) FROM serve_ml_schema_migrations") == len(applied)
        finally:
            await conn.close()

    asyncio.run(go())


def test_jsonb_documents_survive_the_move_to_json(fresh_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database written before migration 3 keeps its stored documents, now as json."""
    t = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)

    async def go() -> None:
        conn = await asyncpg.connect(fresh_db)
        try:
            with monkeypatch.context() as m:
                m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2])
                mode = await schema.migrate(conn)
            await schema.Partitions(mode).ensure(conn, [t])
            assert set((await _column_types(conn)).values()) == {"jsonb"}
            await conn.execute(
                "INSERT INTO serve_ml_readings (time, equipment_id, power, features, source) "
                "VALUES ($1, 'press-02', '7.5kW', '{\"torque_nm\": 41.5}', 'kafka')", t)
            await conn.execute(
                "INSERT INTO serve_ml_predictions (time, equipment_id, power, model_version, anomaly, score, "
                "modalities, fault_probabilities, source) VALUES ($1, 'press-02', '7.5kW', 'v1', false, 0.4, "
                "'{\"thermal\": {\"status\": \"absent\"}}', '{\"TWF\": 0.1}', 'kafka')", t)
            await schema.migrate(conn)
            assert set((await _column_types(conn)).values()) == {"json"}
            r = await conn.fetchrow("SELECT features::text AS f FROM serve_ml_readings WHERE time = $1", t)
            assert r["f"] == '{"torque_nm": 41.5}'
            p = await conn.fetchrow("SELECT modalities::text AS m, fault_probabilities::text AS fp "
                                    "FROM serve_ml_predictions WHERE time = $1", t)
            assert (p["m"], p["fp"]) == ('{"thermal": {"status": "absent"}}', '{"TWF": 0.1}')
        finally:
            await conn.close()

    asyncio.run(go())
