"""Stored thresholds: set and delete with who, when, why and the previous value
(``serve_ml_threshold_history``), versioned apart from the model bundles."""

from __future__ import annotations

from typing import Any

import asyncpg

from serve_ml.core.errors import NotFound
from serve_ml.operations.alarm_store import clear_in
from serve_ml.operations.db import OpsDB, bump_generation, record_change
from serve_ml.operations.registry import placements
from serve_ml.operations.rule_store import load_rules
from serve_ml.operations.thresholds import Limits, Rule, Scope, ThresholdBook, Window

_LIMIT_COLS = ("warning_min", "warning_max", "critical_min", "critical_max", "valid_min", "valid_max")


async def load_book(conn: asyncpg.Connection) -> ThresholdBook:
    rules = [Rule(r["scope"], r["target"], r["sensor"], Limits(**{c: r[c] for c in _LIMIT_COLS}), r["version"])
             for r in await conn.fetch("SELECT * FROM serve_ml_thresholds")]
    windows = [Window(r["id"], r["scope"], r["target"], r["starts_at"], r["ends_at"]) for r in await conn.fetch(
        "SELECT id, scope, target, starts_at, ends_at FROM serve_ml_maintenance "
        "WHERE ends_at > now() - interval '1 day'")]
    return ThresholdBook(rules, await placements(conn), windows, await load_rules(conn))


class Thresholds:
    def __init__(self, db: OpsDB, alerts_topic: str) -> None:
        self.db = db
        self.alerts_topic = alerts_topic

    async def find(self, scope: Scope | None = None, target: str | None = None) -> list[dict[str, Any]]:
        return await self.db.fetch(
            "SELECT * FROM serve_ml_thresholds WHERE ($1::text IS NULL OR scope = $1) "
            "AND ($2::text IS NULL OR target = $2) ORDER BY scope, target, sensor", scope, target)

    async def applied(self, equipment_id: str) -> dict[str, Any]:
        """The limits that apply to one equipment, sensor by sensor, with the scope each comes from."""
        async with self.db.transaction() as conn:
            book = await load_book(conn)
        return {s: {"limits": a.limits.model_dump(exclude_none=True), "scope": a.scope, "target": a.target,
                    "version": a.version} for s, a in sorted(book.applied(equipment_id).items())}

    async def set(self, scope: Scope, target: str, sensor: str, limits: Limits, *, actor: str,
                  reason: str) -> dict[str, Any]:
        async with self.db.transaction() as conn:
            prev = await conn.fetchrow("SELECT * FROM serve_ml_thresholds WHERE scope = $1 AND target = $2 "
                                       "AND sensor = $3 FOR UPDATE", scope, target, sensor)
            version = (prev["version"] + 1) if prev else 1
            values = [getattr(limits, c) for c in _LIMIT_COLS]
            row = await conn.fetchrow(
                "INSERT INTO serve_ml_thresholds (scope, target, sensor, warning_min, warning_max, critical_min, "
                "critical_max, valid_min, valid_max, version, set_by, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, "
                "$8, $9, $10, $11, $12) ON CONFLICT (scope, target, sensor) DO UPDATE SET warning_min = $4, "
                "warning_max = $5, critical_min = $6, critical_max = $7, valid_min = $8, valid_max = $9, "
                "version = $10, set_by = $11, reason = $12, set_at = now() "
                "RETURNING *", scope, target, sensor, *values, version, actor, reason)
            await self._history(conn, "set", scope, target, sensor, version, prev, limits.model_dump(), actor,
                                reason)
            await bump_generation(conn)
        return _row(row)

    async def delete(self, scope: Scope, target: str, sensor: str, *, actor: str, reason: str) -> dict[str, Any]:
        """Remove one threshold; open threshold alarms of that sensor that no limit
        covers any more are cleared (by ``actor``, with ``reason``)."""
        async with self.db.transaction() as conn:
            prev = await conn.fetchrow("DELETE FROM serve_ml_thresholds WHERE scope = $1 AND target = $2 "
                                       "AND sensor = $3 RETURNING *", scope, target, sensor)
            if prev is None:
                raise NotFound(f"no {scope} threshold for sensor {sensor!r} of {target!r}")
            await self._history(conn, "delete", scope, target, sensor, prev["version"] + 1, prev, None, actor,
                                reason)
            await bump_generation(conn)
            book = await load_book(conn)
            open_ids = [r["id"] for r in await conn.fetch(
                "SELECT id, equipment_id FROM serve_ml_alerts WHERE status = 'open' AND kind = 'threshold' "
                "AND source = $1", sensor) if sensor not in book.applied(r["equipment_id"])]
            cleared = [await clear_in(conn, i, actor=actor, comment=f"threshold deleted: {reason}",
                                      topic=self.alerts_topic)
                       for i in open_ids]
        return {"deleted": _row(prev), "alarms_cleared": [c["id"] for c in cleared if c is not None]}

    async def history(self, scope: Scope | None, target: str | None, sensor: str | None,
                      limit: int) -> list[dict[str, Any]]:
        return await self.db.fetch(
            "SELECT * FROM serve_ml_threshold_history WHERE ($1::text IS NULL OR scope = $1) "
            "AND ($2::text IS NULL OR target = $2) AND ($3::text IS NULL OR sensor = $3) ORDER BY id DESC LIMIT $4",
            scope, target, sensor, limit)

    @staticmethod
    async def _history(conn: asyncpg.Connection, action: str, scope: str, target: str, sensor: str, version: int,
                       prev: Any, current: dict[str, Any] | None, actor: str, reason: str) -> None:
        previous = None if prev is None else {c: prev[c] for c in (*_LIMIT_COLS, "version", "set_by", "reason")} | {
            "set_at": prev["set_at"].isoformat()}
        await record_change(conn, "serve_ml_threshold_history", {"scope": scope, "target": target, "sensor": sensor},
                            action, version, previous, current, actor=actor, reason=reason)


def _row(r: Any) -> dict[str, Any]:
    out = dict(r)
    out["set_at"] = out["set_at"].isoformat()
    return out
