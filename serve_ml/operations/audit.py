"""The audit trail: every management and operator action the API was asked for —
who (the bearer's subject and role), what (method, route, target path, outcome),
when, and from where (the client address) — written by the HTTP edge after the
answer, readable by admins."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from serve_ml.operations.db import OpsDB


@dataclass(frozen=True)
class AuditEntry:
    subject: str
    role: str
    method: str
    route: str
    path: str
    status: int
    client: str
    at: dt.datetime


class AuditLog:
    def __init__(self, db: OpsDB) -> None:
        self.db = db

    async def record(self, e: AuditEntry) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO serve_ml_audit (at, subject, role, method, route, path, status, client) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                e.at, e.subject[:200], e.role, e.method, e.route[:300], e.path[:1000], e.status, e.client[:100])

    async def find(self, *, subject: str | None = None, path_prefix: str | None = None,
                   start: dt.datetime | None = None, end: dt.datetime | None = None,
                   limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        return await self.db.fetch(
            "SELECT id, at, subject, role, method, route, path, status, client FROM serve_ml_audit "
            "WHERE ($1::text IS NULL OR subject = $1) AND ($2::text IS NULL OR starts_with(path, $2)) "
            "AND ($3::timestamptz IS NULL OR at >= $3) AND ($4::timestamptz IS NULL OR at < $4) "
            "ORDER BY at DESC, id DESC LIMIT $5", subject, path_prefix, start, end, limit)
