"""Stored alarm rules: set and delete with who, when, why and the previous rule
(``serve_ml_alarm_rule_history``); a change takes effect on the stream's next
batch (the operations generation moves)."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from serve_ml.core.errors import NotFound
from serve_ml.operations.alarm_rules import AlarmRule, RuleBook, StoredRule
from serve_ml.operations.db import OpsDB, bump_generation, jsonable, record_change
from serve_ml.operations.registry import placements
from serve_ml.operations.scopes import Scope


async def load_rules(conn: asyncpg.Connection) -> RuleBook:
    return RuleBook(StoredRule(r["scope"], r["target"], r["kind"], AlarmRule.model_validate_json(r["rule"]),
                               r["version"])
                    for r in await conn.fetch("SELECT scope, target, kind, rule::text AS rule, version "
                                              "FROM serve_ml_alarm_rules"))


class AlarmRules:
    def __init__(self, db: OpsDB) -> None:
        self.db = db

    async def find(self, scope: Scope | None = None, target: str | None = None) -> list[dict[str, Any]]:
        return [jsonable(r) for r in await self.db.fetch(
            "SELECT scope, target, kind, rule::text AS rule, version, set_by, set_at, reason "
            "FROM serve_ml_alarm_rules WHERE ($1::text IS NULL OR scope = $1) AND ($2::text IS NULL OR target = $2) "
            "ORDER BY scope, target, kind", scope, target)]

    async def applied(self, equipment_id: str) -> dict[str, Any]:
        """Per alarm type, the rule that applies to one equipment and where it comes from."""
        async with self.db.transaction() as conn:
            book, place = await load_rules(conn), await placements(conn)
        out = {}
        for kind in ("anomaly", "rul", "threshold", "sensor_fault"):
            a = book.applied(equipment_id, kind, place)
            out[kind] = {"rule": a.rule.model_dump(), "scope": a.scope, "target": a.target}
        return out

    async def set(self, scope: Scope, target: str, kind: str, rule: AlarmRule, *, actor: str,
                  reason: str) -> dict[str, Any]:
        async with self.db.transaction() as conn:
            prev = await conn.fetchrow("SELECT * FROM serve_ml_alarm_rules WHERE scope = $1 AND target = $2 "
                                       "AND kind = $3 FOR UPDATE", scope, target, kind)
            version = (prev["version"] + 1) if prev else 1
            row = await conn.fetchrow(
                "INSERT INTO serve_ml_alarm_rules (scope, target, kind, rule, version, set_by, reason) "
                "VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7) ON CONFLICT (scope, target, kind) DO UPDATE SET "
                "rule = $4::jsonb, version = $5, set_by = $6, reason = $7, set_at = now() "
                "RETURNING scope, target, kind, rule::text AS rule, version, set_by, set_at, reason",
                scope, target, kind, rule.model_dump_json(), version, actor, reason)
            await _history(conn, "set", scope, target, kind, version, prev, rule.model_dump(), actor, reason)
            await bump_generation(conn)
        return jsonable(dict(row))

    async def delete(self, scope: Scope, target: str, kind: str, *, actor: str, reason: str) -> dict[str, Any]:
        async with self.db.transaction() as conn:
            prev = await conn.fetchrow("DELETE FROM serve_ml_alarm_rules WHERE scope = $1 AND target = $2 "
                                       "AND kind = $3 RETURNING *", scope, target, kind)
            if prev is None:
                raise NotFound(f"no {scope} alarm rule for {kind!r} alarms of {target!r}")
            await _history(conn, "delete", scope, target, kind, prev["version"] + 1, prev, None, actor, reason)
            await bump_generation(conn)
        return {"deleted": {"scope": scope, "target": target, "kind": kind, "version": prev["version"]}}

    async def history(self, scope: Scope | None, target: str | None, kind: str | None,
                      limit: int) -> list[dict[str, Any]]:
        return [jsonable(r) for r in await self.db.fetch(
            "SELECT id, scope, target, kind, action, version, previous::text AS previous, current::text AS current, "
            "actor, reason, at FROM serve_ml_alarm_rule_history WHERE ($1::text IS NULL OR scope = $1) "
            "AND ($2::text IS NULL OR target = $2) AND ($3::text IS NULL OR kind = $3) ORDER BY id DESC LIMIT $4",
            scope, target, kind, limit)]



async def _history(conn: asyncpg.Connection, action: str, scope: str, target: str, kind: str, version: int,
                   prev: Any, current: dict[str, Any] | None, actor: str, reason: str) -> None:
    previous = None if prev is None else {"rule": orjson.loads(prev["rule"]), "version": prev["version"],
                                          "set_by": prev["set_by"], "reason": prev["reason"],
                                          "set_at": prev["set_at"].isoformat()}
    await record_change(conn, "serve_ml_alarm_rule_history", {"scope": scope, "target": target, "kind": kind},
                        action, version, previous, current, actor=actor, reason=reason)
