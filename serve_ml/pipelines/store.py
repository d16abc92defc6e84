"""Write one scored micro-batch in one transaction: readings, predictions, alerts
and alert outbox rows. Idempotent on the natural key ``(equipment_id, time,
reading_key)`` (see ``pipelines.encode.reading_key``): a replayed batch inserts
nothing and raises no alert twice, while two different readings stamped with the
same time are both stored.

Rows go in with COPY straight into the tables: new data (the usual case) costs
one COPY per table. A batch that overlaps what is stored (a replay after a crash
or a rebalance) violates the primary key; that transaction is rolled back and the
batch goes again the slow way, COPY into per-connection temp tables and
``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, which skips the duplicates. On
that path a row whose key is stored with other features (the same producer
``reading_id`` sent twice with different values) is a conflict: not stored, and
returned for the dead-letter topic. Measured on the embedded PostgreSQL: 7.5 µs of
server CPU per reading the fast way, 12 µs the slow way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

import asyncpg

from serve_ml.operations.alarm_store import TransitionLog
from serve_ml.operations.thresholds import EMPTY_BOOK, ThresholdBook
from serve_ml.pipelines import alarms
from serve_ml.pipelines.alarms import Transitions
from serve_ml.pipelines.encode import P_COLS, R_COLS, Rows
from serve_ml.pipelines.ops_write import write_rollups, write_status
from serve_ml.pipelines.schema import Partitions
from serve_ml.pipelines.verdicts import Judged, days

_TEMP = """
CREATE TEMP TABLE IF NOT EXISTS _in_readings (LIKE serve_ml_readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _in_predictions (LIKE serve_ml_predictions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
"""
@dataclass
class WriteStats:
    readings: int = 0
    predictions: int = 0
    duplicates: int = 0
    conflicts: list[tuple[int | None, int | None]] = field(default_factory=list)
    """(source_partition, source_offset) of each row refused as a conflict."""
    alerts_opened: list[int] = field(default_factory=list)
    alerts_resolved: list[int] = field(default_factory=list)


async def write_batch(conn: asyncpg.Connection, rows: Rows, *, partitions: Partitions, alerts_topic: str,
                      resolve_after: int, before_alerts: Callable[[], Awaitable[None]] | None = None,
                      book: ThresholdBook = EMPTY_BOOK, live: Collection[str] | None = None) -> WriteStats:
    """Store ``rows`` in one transaction. ``before_alerts`` is awaited after the copy
    and before the alert logic: the stream scorer passes "the previous batch is
    stored", so batches copy in parallel but open and resolve alerts in order.
    ``live``: the equipment whose batch summary is notified to WebSocket clients
    (``operations.live_follows``; None: every equipment's)."""
    if not rows:
        return WriteStats()
    await partitions.ensure(conn, days(rows.judged))
    try:
        return await _write(conn, rows, alerts_topic, resolve_after, before_alerts, book, live)
    except asyncpg.CheckViolationError:
        # "no partition of relation ... found for row": another writer's retention
        # pass dropped a partition this one still had in its cache.
        partitions.forget()
        await partitions.ensure(conn, days(rows.judged))
        return await _write(conn, rows, alerts_topic, resolve_after, before_alerts, book, live)


async def _write(conn: asyncpg.Connection, rows: Rows, alerts_topic: str, resolve_after: int,
                 before_alerts: Callable[[], Awaitable[None]] | None, book: ThresholdBook,
                 live: Collection[str] | None) -> WriteStats:
    try:
        async with conn.transaction():
            await _copy(conn, "serve_ml_readings", rows)
            await _copy(conn, "serve_ml_predictions", rows)
            stats = WriteStats(readings=len(rows), predictions=len(rows))
            if before_alerts is not None:
                await before_alerts()
            await _alerts(conn, rows.judged, stats, alerts_topic, resolve_after, book, live)
        return stats
    except asyncpg.UniqueViolationError:
        pass  # a replay: nothing of this transaction stays; take the slow way
    stats = WriteStats()
    async with conn.transaction():
        new = await _insert_skipping_duplicates(conn, rows, stats)
        if before_alerts is not None:
            await before_alerts()
        if any(map(len, new)):
            await _alerts(conn, new, stats, alerts_topic, resolve_after, book, live)
    return stats


async def _insert_skipping_duplicates(conn: asyncpg.Connection, rows: Rows, stats: WriteStats) -> list[Judged]:
    # Per batch on purpose: the pool replaces a broken connection with a new one, so
    # caching "already created" per connection could go stale.
    await conn.execute(_TEMP)
    await _copy(conn, "_in_readings", rows)
    await _copy(conn, "_in_predictions", rows)
    res = await conn.execute(f"INSERT INTO serve_ml_readings ({', '.join(R_COLS)}) "
                             f"SELECT {', '.join(R_COLS)} FROM _in_readings ON CONFLICT DO NOTHING")
    stats.readings = int(res.rsplit(" ", 1)[1])
    # Only the keys come back; the alert logic reads the verdicts from memory.
    inserted = await conn.fetch(
        f"INSERT INTO serve_ml_predictions ({', '.join(P_COLS)}) SELECT {', '.join(P_COLS)} FROM _in_predictions "
        "ON CONFLICT DO NOTHING RETURNING time, equipment_id, reading_key")
    # Compared as values (jsonb), not text: features are stored as the producer wrote
    # them, and the same reading may come again written another way. When every
    # reading went in, none can conflict: the join (a key lookup per reading) is skipped.
    conflicts = [] if stats.readings == len(rows) else await conn.fetch(
        "SELECT i.source_partition, i.source_offset FROM _in_readings i JOIN serve_ml_readings r "
        "USING (equipment_id, time, reading_key) WHERE r.features::jsonb <> i.features::jsonb")
    stats.predictions = len(inserted)
    stats.conflicts = [(r["source_partition"], r["source_offset"]) for r in conflicts]
    stats.duplicates = len(rows) - len(inserted) - len(conflicts)
    keys = {(r["equipment_id"], r["time"], r["reading_key"]) for r in inserted}
    return [j.take([i for i, (t, k) in enumerate(zip(j.times, j.keys.tolist(), strict=True))
                    if (j.equipment_id, t, k) in keys]) for j in rows.judged]


async def _copy(conn: asyncpg.Connection, table: str, rows: Rows) -> None:
    if table.endswith("_readings"):
        await conn.copy_to_table(table, source=rows.copy_readings(), columns=R_COLS, format="binary")
    else:
        await conn.copy_to_table(table, source=rows.copy_predictions(), columns=P_COLS, format="binary")


async def _alerts(conn: asyncpg.Connection, judged: list[Judged], stats: WriteStats,
                  topic: str, resolve_after: int, book: ThresholdBook, live: Collection[str] | None) -> None:
    """Every alarm type a batch can raise or clear (``pipelines.alarms``), then the
    equipment's live status and the hourly rollups of the rows it stored."""
    done, log = Transitions(), TransitionLog(topic)
    await alarms.apply(conn, [("", j) for j in judged], alarms.ANOMALY, log, resolve_after, done, book)
    views = [v for v in (j.rul_view() for j in judged) if v is not None]
    if views:
        await alarms.apply(conn, [("", v) for v in views], alarms.RUL, log, resolve_after, done, book)
    if book:
        await alarms.apply(conn, alarms.threshold_views(judged, book), alarms.THRESHOLD, log, resolve_after,
                           done, book)
    await alarms.apply(conn, alarms.fault_views(judged, await alarms.active_faults(conn, judged)),
                       alarms.SENSOR_FAULT, log, resolve_after, done, book)
    await log.flush(conn)
    stats.alerts_opened += done.opened
    stats.alerts_resolved += done.resolved
    await write_status(conn, judged, book, live=live)
    await write_rollups(conn, judged)
