"""Schema migrations on the session's real PostgreSQL, each test in a database of its own."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import asyncpg
import pytest

from serve_ml.pipelines import schema
from serve_ml.pipelines.stack import Stack

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


async def migrate_up_to(conn: asyncpg.Connection, version: int, monkeypatch: pytest.MonkeyPatch,
                        day: dt.datetime) -> str:
    """Apply migrations 1..version only (a database as an older release left it), with
    the partition for ``day``; returns the storage mode."""
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", [step for step in schema.MIGRATIONS if step[0] <= version])
        mode = await schema.migrate(conn)
    await schema.Partitions(mode).ensure(conn, [day])
    return mode


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
            await migrate_up_to(conn, 2, monkeypatch, t)
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


def test_fleet_wide_time_ranges_use_a_brin_index(fresh_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration 4 swaps the btree on predictions' time for BRIN, on the partitions too."""
    t = dt.datetime(2026, 11, 2, 8, tzinfo=dt.UTC)

    async def index_methods(conn: asyncpg.Connection) -> set[tuple[str, str]]:
        rows = await conn.fetch(
            "SELECT c.relname, am.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am am ON am.oid = c.relam JOIN pg_class t ON t.oid = i.indrelid "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0] "
            "WHERE t.relname LIKE 'serve_ml_predictions%' AND a.attname = 'time' AND i.indnatts = 1")
        return {(r["relname"], r["amname"]) for r in rows}

    async def go() -> None:
        conn = await asyncpg.connect(fresh_db)
        try:
            mode = await migrate_up_to(conn, 3, monkeypatch, t)
            assert {am for _, am in await index_methods(conn)} == {"btree"}
            await schema.migrate(conn)
            await schema.Partitions(mode).ensure(conn, [t + dt.timedelta(days=1)])
            methods = await index_methods(conn)
            assert {am for _, am in methods} == {"brin"}
            assert len(methods) == 3  # the parent and both daily partitions
            # Many machines, so the primary key (equipment first) is a poor way in.
            await conn.execute(
                "INSERT INTO serve_ml_predictions (time, equipment_id, power, model_version, anomaly, score, "
                "modalities, source) SELECT $1::timestamptz + g * interval '1 s', 'eq-' || (g % 500), '7.5kW', "
                "'v1', false, 0.1, '{}', 'kafka' FROM generate_series(0, 19999) g", t)
            await conn.execute("ANALYZE serve_ml_predictions")
            await conn.execute("SET enable_seqscan = off")
            plan = "\n".join(r[0] for r in await conn.fetch(
                "EXPLAIN SELECT count(*) FROM serve_ml_predictions WHERE time >= $1 AND time < $2",
                t, t + dt.timedelta(hours=1)))
            brin = {name for name, am in methods if name != "serve_ml_predictions_time"}
            assert any(f"Bitmap Index Scan on {name}" in plan for name in brin), plan
        finally:
            await conn.close()

    asyncio.run(go())
