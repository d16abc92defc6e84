"""Helpers for tests that drive the stream stack: SQL counts, raw produce/consume."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from serve_ml.bench.producer import SteadyProducer
from serve_ml.pipelines.simulator import Machine, run_kafka
from serve_ml.pipelines.stack import Stack

__all__ = ["SteadyProducer", "consume_all", "count", "locate", "now", "produce_raw", "q", "report",
           "resolve_open_alerts", "stored_times", "wait_count", "wait_stored", "write_rows"]


def q(stack: Stack, sql: str, *args):
    async def go():
        conn = await asyncpg.connect(stack.database_url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()
    return asyncio.run(go())


def count(stack: Stack, table: str, eq: str, since: dt.datetime) -> int:
    """Rows for ``eq`` in the hour from ``since``: tests share the database, and one
    stores readings stamped two hours ahead, which must not count elsewhere."""
    return q(stack, f"SELECT count(*) AS n FROM {table} WHERE equipment_id = $1 AND time >= $2 AND time < $3",
             eq, since, since + dt.timedelta(hours=1))[0]["n"]


def wait_count(stack: Stack, table: str, eq: str, since: dt.datetime, n: int, timeout_s: float = 90) -> int:
    deadline = time.monotonic() + timeout_s
    got = -1
    while time.monotonic() < deadline:
        got = count(stack, table, eq, since)
        if got >= n:
            time.sleep(1.0)  # anything beyond n would show up now
            return count(stack, table, eq, since)
        time.sleep(0.3)
    return got


def resolve_open_alerts(stack: Stack, machine: Machine, timeout_s: float = 90) -> None:
    """Stream ``machine``'s readings (a normal profile) until it has no open alert.

    Tests share one database and run in random order: an alert another test left
    open would absorb this test's anomalies instead of a new alert opening."""
    deadline, seed = time.monotonic() + timeout_s, 100
    assert machine.profile == "normal", machine
    while q(stack, "SELECT 1 FROM serve_ml_alerts WHERE equipment_id = $1 AND status = 'open'", machine.equipment_id):
        assert time.monotonic() < deadline, f"an alert on {machine.equipment_id} stayed open"
        asyncio.run(run_kafka(stack.bootstrap, stack.settings.features_topic, [machine], 0,
                              total=stack.settings.alert_resolve_after * 2, seed=seed))
        seed += 1
        time.sleep(1.0)


def write_rows(stack: Stack, rows, resolve_after: int):
    """Store encoded rows (``pipelines.encode.Rows``) the way the stream scorer does,
    on one connection of the stack's database; return the write's stats."""
    from serve_ml.pipelines.schema import Partitions
    from serve_ml.pipelines.store import write_batch

    async def go():
        conn = await asyncpg.connect(stack.database_url)
        try:
            return await write_batch(conn, rows, partitions=Partitions(stack.mode), alerts_topic="t",
                                     resolve_after=resolve_after)
        finally:
            await conn.close()
    return asyncio.run(go())


def produce_raw(stack: Stack, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    async def go():
        p = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
        await p.start()
        try:
            for key, value in values:
                await p.send_and_wait(topic, value, key=key)
        finally:
            await p.stop()
    asyncio.run(go())


def consume_all(stack: Stack, topic: str, idle_s: float = 3.0) -> list:
    async def go():
        c = AIOKafkaConsumer(topic, bootstrap_servers=stack.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
        await c.start()
        out = []
        try:
            while True:
                batch = await c.getmany(timeout_ms=int(idle_s * 1000))
                if not batch:
                    return out
                for recs in batch.values():
                    out.extend(recs)
        finally:
            await c.stop()
    return asyncio.run(go())


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def stored_times(stack: Stack, table: str, eq: str, since: dt.datetime) -> list[dt.datetime]:
    """Times stored for ``eq`` in the hour from ``since`` (other tests store readings
    stamped hours ahead; they must not count here)."""
    return [r["time"] for r in q(stack, f"SELECT time FROM {table} WHERE equipment_id = $1 AND time >= $2 "
                                        "AND time < $3", eq, since, since + dt.timedelta(hours=1))]


def wait_stored(stack: Stack, table: str, eq: str, since: dt.datetime, expected: set[dt.datetime],
                timeout_s: float = 120) -> list[dt.datetime]:
    """Poll until every expected reading is stored (or time runs out); return what is stored."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = stored_times(stack, table, eq, since)
        if expected <= set(got) or time.monotonic() > deadline:
            time.sleep(1.0)  # anything extra (a duplicate) would show up now
            return stored_times(stack, table, eq, since)
        time.sleep(0.5)


def report(fault: str, **counts: object) -> None:
    """One line per fault test, greppable in CI logs: ``FAULT name: k=v ...``."""
    print(f"FAULT {fault}: " + " ".join(f"{k}={v}" for k, v in counts.items()))


def _ts(value: bytes) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(orjson.loads(value)["ts"])
    except Exception:
        return None


def in_broker_log(stack: Stack, wanted: set[dt.datetime]) -> set[dt.datetime]:
    """Which of these reading times the broker's features topic holds now."""
    return {t for r in consume_all(stack, stack.settings.features_topic) if (t := _ts(r.value)) in wanted}


def locate(stack: Stack, missing: set[dt.datetime], eq: str) -> str:
    """Where readings that should have been stored went, for a failure message: in
    the broker's log (at which offsets), dead-lettered (why), or in neither; which
    source offsets were stored; what the scorers counted."""
    in_log = sorted((r.partition, r.offset) for r in consume_all(stack, stack.settings.features_topic)
                    if _ts(r.value) in missing)
    dead = [dict(r.headers).get("reason", b"").decode() for r in consume_all(stack, stack.settings.dead_letter_topic)
            if _ts(r.value) in missing]
    spans = q(stack, "SELECT source_partition AS p, min(source_offset) AS lo, max(source_offset) AS hi, count(*) AS n "
                     "FROM serve_ml_readings WHERE equipment_id = $1 AND time >= $2 GROUP BY 1 ORDER BY 1",
              eq, min(missing) - dt.timedelta(minutes=5))
    counters = {name: {k: h.get(k) for k in ("offset_resets", "commits_skipped", "commit_failures", "stalls",
                                             "restarts", "dead_lettered")}
                for name, h in stack.health().items() if name.startswith("stream-")}
    return (f"{len(missing)} missing; in the broker's log: {len(in_log)} at (partition, offset) "
            f"{in_log[:3]}..{in_log[-3:]}; dead-lettered: {len(dead)} {sorted(set(dead))[:3]}; in neither: "
            f"{len(missing) - len(in_log) - len(dead)}; stored source offsets per partition: "
            f"{[(r['p'], r['lo'], r['hi'], r['n']) for r in spans]}; scorers: {counters}")
