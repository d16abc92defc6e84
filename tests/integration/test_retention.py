"""Retention on the real PostgreSQL of the stream stack (plain partitions here:
TimescaleDB is not installable on these machines)."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import pytest

from serve_ml.bundles.batch import Reading
from serve_ml.bundles.catalog import Catalog
from serve_ml.pipelines.encode import Origin, encode_scored
from serve_ml.pipelines.retention import apply_retention
from serve_ml.pipelines.schema import PARTITIONED, Partitions
from serve_ml.pipelines.stack import Stack
from serve_ml.pipelines.store import write_batch

pytestmark = pytest.mark.integration
FEATURES = {"air_temp_k": 300.0, "process_temp_k": 310.0}


def _rows(stack: Stack, at: dt.datetime, n: int):
    cat = Catalog.scan(stack.settings.root)
    readings = [Reading("press-02", FEATURES | {"air_temp_k": 300.0 + i}, "7.5kW") for i in range(n)]
    origins = [Origin(at + dt.timedelta(seconds=i), r.features, "test") for i, r in enumerate(readings)]
    rows, rejected = encode_scored(cat, readings, origins, enable_xgb=False)
    assert not rejected
    return rows


def test_retention_drops_old_partitions_and_delivered_outbox_rows_only(stack: Stack) -> None:
    if stack.mode != PARTITIONED:
        pytest.skip("the TimescaleDB path is the extension's own retention job")
    now = dt.datetime.now(dt.UTC)
    old_day = (now - dt.timedelta(days=45)).replace(hour=12, minute=0, second=0, microsecond=0)
    kept_day = (now - dt.timedelta(days=20)).replace(hour=12, minute=0, second=0, microsecond=0)

    async def go() -> tuple:
        conn = await asyncpg.connect(stack.database_url)
        try:
            parts = Partitions(PARTITIONED)
            for day in (old_day, kept_day):
                await write_batch(conn, _rows(stack, day, 5), partitions=parts, alerts_topic="t", resolve_after=5)
            await conn.execute(
                "INSERT INTO serve_ml_outbox (topic, key, payload, created_at, sent_at) VALUES "
                "('retention-test', 'a', '{}', $1, $1), ('retention-test', 'b', '{}', $1, NULL), "
                "('retention-test', 'c', '{}', $2, $2)", old_day, kept_day)
            report = await apply_retention(conn, PARTITIONED, 30)
            left = await conn.fetch("SELECT key FROM serve_ml_outbox WHERE topic = 'retention-test' ORDER BY key")
            stored = {d: await conn.fetchval(
                "SELECT count(*) FROM serve_ml_readings WHERE equipment_id = 'press-02' AND time >= $1 AND time < $2",
                d, d + dt.timedelta(hours=1)) for d in (kept_day,)}
            tables = {r["relname"] for r in await conn.fetch("SELECT relname FROM pg_class WHERE relname LIKE "
                                                              "'serve_ml_%_p%'")}
            return report, [r["key"] for r in left], stored, tables
        finally:
            await conn.close()

    report, left, stored, tables = asyncio.run(go())
    print(f"retention: dropped={report.dropped} outbox_deleted={report.outbox_deleted}")
    old = f"p{old_day:%Y%m%d}"
    assert {f"serve_ml_readings_{old}", f"serve_ml_predictions_{old}"} <= set(report.dropped)
    assert not any(t.endswith(old) for t in tables)
    assert f"serve_ml_readings_p{kept_day:%Y%m%d}" in tables and stored[kept_day] == 5
    assert not any(n.endswith(f"{kept_day:%Y%m%d}") for n in report.dropped)
    assert left == ["b", "c"]  # the old undelivered row waits for its delivery


def test_a_writer_whose_partition_was_dropped_under_it_creates_it_again(stack: Stack) -> None:
    if stack.mode != PARTITIONED:
        pytest.skip("plain-PostgreSQL partitions only")
    day = (dt.datetime.now(dt.UTC) - dt.timedelta(days=10)).replace(hour=6, minute=0, second=0, microsecond=0)

    async def go() -> int:
        conn = await asyncpg.connect(stack.database_url)
        try:
            parts = Partitions(PARTITIONED)
            await write_batch(conn, _rows(stack, day, 3), partitions=parts, alerts_topic="t", resolve_after=5)
            for t in ("serve_ml_readings", "serve_ml_predictions"):  # another writer's retention, say
                await conn.execute(f"DROP TABLE {t}_p{day:%Y%m%d}")
            assert day.date() in parts.known  # this writer still believes it is there
            stats = await write_batch(conn, _rows(stack, day + dt.timedelta(minutes=5), 4), partitions=parts,
                                      alerts_topic="t", resolve_after=5)
            return stats.predictions
        finally:
            await conn.close()

    assert asyncio.run(go()) == 4


def test_creating_a_partition_behind_an_open_write_fails_after_its_lock_timeout_instead_of_hanging(
        stack: Stack) -> None:
    # A new day's partition locks its parent until every transaction that wrote to it
    # ends. Were that transaction waiting on this writer (a later batch waiting for an
    # earlier one), nothing would ever move: the wait is bounded, and a plain wait on
    # someone else's write still succeeds once that write ends.
    if stack.mode != PARTITIONED:
        pytest.skip("plain-PostgreSQL partitions only")
    day = (dt.datetime.now(dt.UTC) - dt.timedelta(days=12)).replace(hour=3, minute=0, second=0, microsecond=0)

    async def go() -> None:
        writer, other = await asyncpg.connect(stack.database_url), await asyncpg.connect(stack.database_url)
        try:
            for t in ("serve_ml_readings", "serve_ml_predictions"):
                await writer.execute(f"DROP TABLE IF EXISTS {t}_p{day:%Y%m%d}")
            parts = Partitions(PARTITIONED)
            open_write = other.transaction()
            await open_write.start()
            await other.execute("LOCK TABLE serve_ml_readings IN ROW EXCLUSIVE MODE")  # what a COPY holds
            t0 = asyncio.get_running_loop().time()
            with pytest.raises(asyncpg.LockNotAvailableError):
                await parts.ensure(writer, [day], lock_timeout_s=1.0)
            assert asyncio.get_running_loop().time() - t0 < 10
            assert parts.missing([day]) == {day.date()}  # not taken for made
            await open_write.rollback()
            await parts.ensure(writer, [day], lock_timeout_s=1.0)
            assert not parts.missing([day])
            assert await writer.fetchval("SELECT count(*) FROM pg_class WHERE relname = $1",
                                         f"serve_ml_readings_p{day:%Y%m%d}") == 1
        finally:
            await writer.close()
            await other.close()

    asyncio.run(go())
