"""The notification delivery log: each routed (event, sink) pair, its state and every attempt."""

from __future__ import annotations

from typing import Any, Literal

from serve_ml.operations.db import OpsDB

DeliveryStatus = Literal["pending", "delivered", "failed"]


class Deliveries:
    def __init__(self, db: OpsDB) -> None:
        self.db = db

    async def find(self, *, sink: str | None = None, status: DeliveryStatus | None = None,
                   alarm_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return await self.db.fetch(
            "SELECT d.id, d.sink, d.status, d.attempts, d.last_error, d.created_at, d.delivered_at, d.next_at, "
            "(d.payload->>'alert_id')::bigint AS alarm_id, d.payload->>'event' AS event, d.payload::text AS payload, "
            "coalesce((SELECT json_agg(json_build_object('at', a.at, 'ok', a.ok, 'error', a.error, "
            "'duration_ms', a.duration_ms) ORDER BY a.id) FROM serve_ml_delivery_attempts a "
            "WHERE a.delivery_id = d.id), '[]')::text AS attempt_log "
            "FROM serve_ml_deliveries d WHERE ($1::text IS NULL OR d.sink = $1) "
            "AND ($2::text IS NULL OR d.status = $2) AND ($3::bigint IS NULL OR (d.payload->>'alert_id')::bigint = $3) "
            "ORDER BY d.id DESC LIMIT $4", sink, status, alarm_id, limit)
