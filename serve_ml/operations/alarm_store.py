"""The alarm lifecycle as ThingsBoard users know it: an alarm is active or cleared,
and acknowledged or not, independently (``active_unack``, ``active_ack``,
``cleared_unack``, ``cleared_ack``). The stream opens, escalates and clears alarms
(``pipelines.alarms``); operators acknowledge and clear them here, with a comment.
Every transition is a timeline row (``serve_ml_alarm_events``) and an outbox event
written in the same transaction, so the alerts topic carries each one once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import asyncpg
import orjson

from serve_ml.core.errors import NotFound
from serve_ml.operations.db import OpsDB

AlarmState = Literal["active_unack", "active_ack", "cleared_unack", "cleared_ack"]
AlarmType = Literal["anomaly", "rul", "threshold", "sensor_fault", "pipeline_fault"]
Severity = Literal["critical", "major", "minor", "warning"]
SEVERITY_RANK = {"warning": 0, "minor": 1, "major": 2, "critical": 3}
LIVE_CHANNEL = "serve_ml_live"  # LISTENed to by the live application's replicas (deployments.live)
LIVE_MAX_BYTES = 7900
STATE_SQL = ("CASE WHEN a.status = 'open' THEN 'active' ELSE 'cleared' END || "
             "CASE WHEN a.acked_at IS NULL THEN '_unack' ELSE '_ack' END")
_COLUMNS = (f"a.id, a.kind AS type, a.source, a.equipment_id, a.power, a.model_version, {STATE_SQL} AS state, "
            "a.status, a.severity, a.opened_at, a.last_seen_at, a.resolved_at AS cleared_at, a.cleared_by, "
            "a.acked_at, a.acked_by, a.peak_score, a.anomalies, a.fault_label, a.modalities, a.detail, a.suppressed_by")


def state_of(status: str, acked: bool) -> str:
    return ("active" if status == "open" else "cleared") + ("_ack" if acked else "_unack")


class TransitionLog:
    """Alarm transitions of one transaction, written together at the end: a
    timeline row each, and, unless suppressed by a maintenance window, an outbox
    event and a live push each, in the order they were added (three statements
    for a whole batch instead of three per transition)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._events: list[tuple[Any, ...]] = []
        self._outbox: list[tuple[str, str, str]] = []
        self._live: list[str] = []

    def add(self, alarm: Any, event: str, at: dt.datetime, *, actor: str | None = None, comment: str | None = None,
            extra: dict[str, Any] | None = None) -> None:
        """``alarm`` is the ``serve_ml_alerts`` row as it is after the transition."""
        state = state_of(alarm["status"], alarm["acked_at"] is not None)
        suppressed = alarm.get("suppressed_by") if hasattr(alarm, "get") else None
        detail = {"state": state, **(extra or {})}
        if suppressed is not None:
            detail["suppressed_by"] = suppressed
        self._events.append((alarm["id"], at, event, actor, comment, alarm["severity"], orjson.dumps(detail).decode()))
        if suppressed is not None:
            return  # inside a maintenance window: recorded, not published
        doc = {"event": event, "alert_id": alarm["id"], "type": alarm["kind"], "source": alarm["source"],
               "equipment_id": alarm["equipment_id"], "severity": alarm["severity"], "state": state,
               "at": at.isoformat(), "actor": actor, "comment": comment, **(extra or {})}
        text = orjson.dumps(doc).decode()
        self._outbox.append((self.topic, alarm["equipment_id"], text))
        if len(text) < LIVE_MAX_BYTES - 40:  # an oversized event goes by the outbox only
            self._live.append('{"type":"alarm","alarm":' + text + "}")

    async def flush(self, conn: asyncpg.Connection) -> None:
        if self._events:
            await conn.executemany(
                "INSERT INTO serve_ml_alarm_events (alarm_id, at, event, actor, comment, severity, detail) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)", self._events)
        if self._outbox:
            await conn.executemany("INSERT INTO serve_ml_outbox (topic, key, payload) VALUES ($1, $2, $3)",
                                   self._outbox)
        if self._live:  # the live push (WebSocket clients), on commit
            await conn.execute("SELECT pg_notify($1, m) FROM unnest($2::text[]) AS m", LIVE_CHANNEL, self._live)
        self._events, self._outbox, self._live = [], [], []

    def __bool__(self) -> bool:
        return bool(self._events)


async def record_transition(conn: asyncpg.Connection, topic: str, alarm: Any, event: str, at: dt.datetime, *,
                            actor: str | None = None, comment: str | None = None,
                            extra: dict[str, Any] | None = None) -> None:
    """One transition written at once (see :class:`TransitionLog`)."""
    log = TransitionLog(topic)
    log.add(alarm, event, at, actor=actor, comment=comment, extra=extra)
    await log.flush(conn)


async def clear_in(conn: asyncpg.Connection, alarm_id: int, *, actor: str, comment: str | None,
                   topic: str = "serve-ml.alerts") -> dict[str, Any] | None:
    """Clear an active alarm inside the caller's transaction; None when it was not active."""
    row = await conn.fetchrow("UPDATE serve_ml_alerts SET status = 'resolved', resolved_at = now(), cleared_by = $2 "
                              "WHERE id = $1 AND status = 'open' RETURNING *", alarm_id, actor)
    if row is None:
        return None
    await record_transition(conn, topic, row, "cleared", row["resolved_at"], actor=actor, comment=comment)
    return dict(row)


class Alarms:
    def __init__(self, db: OpsDB, topic: str) -> None:
        self.db = db
        self.topic = topic

    async def find(self, *, state: AlarmState | None = None, severity: Severity | None = None,
                   type_: AlarmType | None = None, equipment_id: str | None = None,
                   location: tuple[str, ...] = (), start: dt.datetime | None = None,
                   end: dt.datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return await self.db.fetch(
            f"SELECT {_COLUMNS}, e.location FROM serve_ml_alerts a "
            "LEFT JOIN serve_ml_equipment e USING (equipment_id) "
            f"WHERE ($1::text IS NULL OR {STATE_SQL} = $1) AND ($2::text IS NULL OR a.severity = $2) "
            "AND ($3::text IS NULL OR a.kind = $3) AND ($4::text IS NULL OR a.equipment_id = $4) "
            "AND ($5 = 0 OR e.location[1:$5] = $6::text[]) AND ($7::timestamptz IS NULL OR a.opened_at >= $7) "
            "AND ($8::timestamptz IS NULL OR a.opened_at < $8) ORDER BY a.opened_at DESC, a.id DESC LIMIT $9",
            state, severity, type_, equipment_id, len(location), list(location), start, end, limit)

    async def get(self, alarm_id: int) -> dict[str, Any]:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM serve_ml_alerts a WHERE a.id = $1", alarm_id)
        if row is None:
            raise NotFound(f"no alarm {alarm_id}")
        row["timeline"] = await self.db.fetch(
            "SELECT at, event, actor, comment, severity, detail FROM serve_ml_alarm_events WHERE alarm_id = $1 "
            "ORDER BY id", alarm_id)
        return row

    async def ack(self, alarm_id: int, *, actor: str, comment: str | None) -> dict[str, Any]:
        """Acknowledge; acknowledging an acknowledged alarm changes nothing."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow("UPDATE serve_ml_alerts SET acked_at = now(), acked_by = $2 "
                                      "WHERE id = $1 AND acked_at IS NULL RETURNING *", alarm_id, actor)
            if row is not None:
                await record_transition(conn, self.topic, row, "acknowledged", row["acked_at"], actor=actor,
                                        comment=comment)
            elif not await conn.fetchval("SELECT true FROM serve_ml_alerts WHERE id = $1", alarm_id):
                raise NotFound(f"no alarm {alarm_id}")
        return await self.get(alarm_id)

    async def clear(self, alarm_id: int, *, actor: str, comment: str | None) -> dict[str, Any]:
        """Clear an active alarm by hand. If its condition persists, the stream
        raises a new one. Clearing a cleared alarm changes nothing."""
        async with self.db.transaction() as conn:
            if await clear_in(conn, alarm_id, actor=actor, comment=comment, topic=self.topic) is None and \
                    not await conn.fetchval("SELECT true FROM serve_ml_alerts WHERE id = $1", alarm_id):
                raise NotFound(f"no alarm {alarm_id}")
        return await self.get(alarm_id)



SYSTEM_EQUIPMENT = "serve-ml"
"""The equipment id of alarms about serve-ml itself (pipeline faults)."""


async def raise_system_alarm(conn: asyncpg.Connection, topic: str, source: str, severity: str,
                             detail: dict[str, Any]) -> int | None:
    """Open a pipeline-fault alarm for ``source`` (e.g. ``sink:cmms``) unless one is
    active; return the new alarm's id (None: it was active already)."""
    now = dt.datetime.now(dt.UTC)
    row = await conn.fetchrow(
        "INSERT INTO serve_ml_alerts (equipment_id, status, severity, opened_at, last_seen_at, peak_score, anomalies, "
        "kind, source, detail) VALUES ($1, 'open', $2, $3, $3, 0, 1, 'pipeline_fault', $4, $5::jsonb) "
        "ON CONFLICT (equipment_id, kind, source) WHERE status = 'open' DO UPDATE SET last_seen_at = $3, "
        "anomalies = serve_ml_alerts.anomalies + 1, detail = $5::jsonb RETURNING *, (xmax = 0) AS created",
        SYSTEM_EQUIPMENT, severity, now, source, orjson.dumps(detail).decode())
    if not row["created"]:
        return None
    await record_transition(conn, topic, row, "opened", now, extra={"detail": detail})
    return int(row["id"])


async def clear_system_alarm(conn: asyncpg.Connection, topic: str, source: str) -> int | None:
    """Resolve the active pipeline-fault alarm of ``source``, if any."""
    row = await conn.fetchrow(
        "UPDATE serve_ml_alerts SET status = 'resolved', resolved_at = now() WHERE equipment_id = $1 "
        "AND kind = 'pipeline_fault' AND source = $2 AND status = 'open' RETURNING *", SYSTEM_EQUIPMENT, source)
    if row is None:
        return None
    await record_transition(conn, topic, row, "resolved", row["resolved_at"])
    return int(row["id"])
