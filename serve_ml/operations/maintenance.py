"""Maintenance windows: for an equipment, or everything at or under a location,
between two times. Alarms that open inside one are recorded but suppressed: no
outbox event, no notification, no live push; they carry the window that
suppressed them, and their transitions stay in their timeline."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_ml.core.errors import NotFound
from serve_ml.operations.db import OpsDB, bump_generation

WindowScope = Literal["equipment", "location"]


class WindowIn(BaseModel):
    """A maintenance window, as an operator declares it."""

    model_config = ConfigDict(extra="forbid")

    scope: WindowScope = Field(description="equipment, or a location (everything at or under it).")
    target: str = Field(min_length=1, max_length=1000, description="Equipment id or location path.")
    starts_at: dt.datetime = Field(description="Start, with a timezone.")
    ends_at: dt.datetime = Field(description="End (exclusive), with a timezone.")
    reason: str = Field(min_length=1, max_length=2000, description="Why: shown with every alarm it suppresses.")
    actor: str | None = Field(default=None, max_length=200, description="Who (the token's role is recorded too).")

    @model_validator(mode="after")
    def _span(self) -> WindowIn:
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise ValueError("starts_at and ends_at need a timezone (e.g. 2026-12-05T10:00:00Z)")
        if self.starts_at >= self.ends_at:
            raise ValueError("starts_at must be before ends_at")
        return self


class Maintenance:
    def __init__(self, db: OpsDB) -> None:
        self.db = db

    async def create(self, body: WindowIn, target: str, actor: str) -> dict[str, Any]:
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "INSERT INTO serve_ml_maintenance (scope, target, starts_at, ends_at, reason, created_by) "
                "VALUES ($1, $2, $3, $4, $5, $6) RETURNING *", body.scope, target, body.starts_at, body.ends_at,
                body.reason, actor)
            await bump_generation(conn)
        return _row(row)

    async def find(self, *, active_at: dt.datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return await self.db.fetch(
            "SELECT m.*, (SELECT count(*) FROM serve_ml_alerts a WHERE a.suppressed_by = m.id) AS suppressed_alarms "
            "FROM serve_ml_maintenance m WHERE $1::timestamptz IS NULL OR ($1 >= m.starts_at AND $1 < m.ends_at) "
            "ORDER BY m.starts_at DESC LIMIT $2", active_at, limit)

    async def end(self, window_id: int, actor: str) -> dict[str, Any]:
        """End a window now (or drop it, if it has not started)."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "UPDATE serve_ml_maintenance SET ends_at = greatest(starts_at, least(ends_at, now())), "
                "ended_by = $2 WHERE id = $1 RETURNING *", window_id, actor)
            if row is None:
                raise NotFound(f"no maintenance window {window_id}")
            await bump_generation(conn)
        return _row(row)


def _row(r: Any) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in dict(r).items()}
