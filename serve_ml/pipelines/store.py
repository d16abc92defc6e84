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

import datetime as dt
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import orjson

from serve_ml.pipelines.encode import P_COLS, R_COLS, Rows
from serve_ml.pipelines.schema import Partitions
from serve_ml.pipelines.verdicts import Judged, Timeline, Verdict, days

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


def severity(peak_score: float) -> str:
    return "critical" if peak_score >= 3 else "major" if peak_score >= 1.5 else "minor"


async def write_batch(conn: asyncpg.Connection, rows: Rows, *, partitions: Partitions, alerts_topic: str,
                      resolve_after: int, before_alerts: Callable[[], Awaitable[None]] | None = None) -> WriteStats:
    """Store ``rows`` in one transaction. ``before_alerts`` is awaited after the copy
    and before the alert logic: the stream scorer passes "the previous batch is
    stored", so batches copy in parallel but open and resolve alerts in order."""
    if not rows:
        return WriteStats()
    await partitions.ensure(conn, days(rows.judged))
    try:
        return await _write(conn, rows, alerts_topic, resolve_after, before_alerts)
    except asyncpg.CheckViolationError:
        # "no partition of relation ... found for row": another writer's retention
        # pass dropped a partition this one still had in its cache.
        partitions.forget()
        await partitions.ensure(conn, days(rows.judged))
        return await _write(conn, rows, alerts_topic, resolve_after, before_alerts)


async def _write(conn: asyncpg.Connection, rows: Rows, alerts_topic: str, resolve_after: int,
                 before_alerts: Callable[[], Awaitable[None]] | None) -> WriteStats:
    try:
        async with conn.transaction():
            await _copy(conn, "serve_ml_readings", rows)
            await _copy(conn, "serve_ml_predictions", rows)
            stats = WriteStats(readings=len(rows), predictions=len(rows))
            if before_alerts is not None:
                await before_alerts()
            await _alerts(conn, rows.judged, stats, alerts_topic, resolve_after)
        return stats
    except asyncpg.UniqueViolationError:
        pass  # a replay: nothing of this transaction stays; take the slow way
    stats = WriteStats()
    async with conn.transaction():
        new = await _insert_skipping_duplicates(conn, rows, stats)
        if before_alerts is not None:
            await before_alerts()
        if any(map(len, new)):
            await _alerts(conn, new, stats, alerts_topic, resolve_after)
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
    conflicts = await conn.fetch(
        "SELECT i.source_partition, i.source_offset FROM _in_readings i JOIN serve_ml_readings r "
        "USING (equipment_id, time, reading_key) WHERE r.features::text <> i.features::text")
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
                  topic: str, resolve_after: int) -> None:
    """Both kinds of alert, each with its own lifecycle: ``anomaly`` from the gate's
    verdicts, ``rul`` from RUL heads with an alert level (rows below it flagged)."""
    await _alerts_of(conn, judged, stats, topic, resolve_after, "anomaly")
    views = [v for v in (j.rul_view() for j in judged) if v is not None]
    if views:
        await _alerts_of(conn, views, stats, topic, resolve_after, "rul")


async def _alerts_of(conn: asyncpg.Connection, judged: list[Judged], stats: WriteStats,
                     topic: str, resolve_after: int, kind: str) -> None:
    by_eq: dict[str, list[Judged]] = defaultdict(list)
    for group in judged:
        if len(group):
            by_eq[group.equipment_id].append(group)
    open_rows = {r["equipment_id"]: r for r in await conn.fetch(
        "SELECT * FROM serve_ml_alerts WHERE status = 'open' AND kind = $2 AND equipment_id = ANY($1::text[]) "
        "FOR UPDATE", list(by_eq), kind)}
    outbox: list[tuple[str, str, str]] = []
    for eq, groups in by_eq.items():
        rows = Timeline(groups)
        alert = open_rows.get(eq)
        if not len(rows.anomalous) and alert is None:
            continue
        # Verdicts are built for the anomalies only; normal rows count, and one of
        # them may give the time an alert resolved.
        anomalies = [rows.verdict(int(p)) for p in rows.anomalous]
        if anomalies:
            first_normal = int(rows.anomalous[-1]) + 1  # the normal rows after the last anomaly
            streak = len(rows) - first_normal
            worst = max(anomalies, key=lambda r: r.score)
            mods = sorted({m for r in anomalies for m in r.modalities})
            if alert is None:
                alert_id = await conn.fetchval(
                    "INSERT INTO serve_ml_alerts (equipment_id, power, model_version, status, severity, opened_at, "
                    "last_seen_at, peak_score, anomalies, normal_streak, fault_label, modalities, kind) "
                    "VALUES ($1, $2, $3, 'open', $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
                    eq, worst.power, worst.model_version, severity(worst.score), anomalies[0].time,
                    anomalies[-1].time, worst.score, len(anomalies), streak, worst.fault_label, mods, kind)
                stats.alerts_opened.append(alert_id)
                outbox.append((topic, eq, _event("opened", alert_id, eq, worst, anomalies[0].time, mods, kind)))
            else:
                alert_id = alert["id"]
                peak = max(alert["peak_score"], worst.score)
                await conn.execute(
                    "UPDATE serve_ml_alerts SET last_seen_at = $2, peak_score = $3, severity = $4, "
                    "anomalies = anomalies + $5, normal_streak = $6, "
                    "modalities = ARRAY(SELECT DISTINCT unnest(modalities || $7::text[])) WHERE id = $1",
                    alert_id, anomalies[-1].time, peak, severity(peak), len(anomalies), streak, mods)
        else:
            alert_id = alert["id"]  # type: ignore[index]
            streak = alert["normal_streak"] + len(rows)  # type: ignore[index]
            first_normal = 0
        if streak >= resolve_after:
            prior = 0 if anomalies else alert["normal_streak"]  # type: ignore[index]
            resolved_at = rows.time(first_normal + resolve_after - prior - 1)
            await conn.execute("UPDATE serve_ml_alerts SET status = 'resolved', resolved_at = $2, normal_streak = $3 "
                               "WHERE id = $1", alert_id, resolved_at, streak)
            stats.alerts_resolved.append(alert_id)
            outbox.append((topic, eq, orjson.dumps({"event": "resolved", "alert_id": alert_id, "type": kind,
                                                    "equipment_id": eq, "at": resolved_at.isoformat()}).decode()))
        elif not anomalies:
            await conn.execute("UPDATE serve_ml_alerts SET normal_streak = $2 WHERE id = $1", alert_id, streak)
    if outbox:
        await conn.executemany("INSERT INTO serve_ml_outbox (topic, key, payload) VALUES ($1, $2, $3)", outbox)


def _event(event: str, alert_id: int, eq: str, worst: Verdict, at: dt.datetime, mods: list[str],
           kind: str) -> str:
    doc = {"event": event, "alert_id": alert_id, "type": kind, "equipment_id": eq, "power": worst.power,
           "model_version": worst.model_version, "severity": severity(worst.score), "score": worst.score,
           "fault_label": worst.fault_label, "modalities": mods, "at": at.isoformat()}
    if kind == "rul":
        doc["rul"] = worst.rul
    return orjson.dumps(doc).decode()
