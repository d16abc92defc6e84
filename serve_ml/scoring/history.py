"""Read side of the stored stream: predictions, readings and alerts per equipment.

Lives in ``deployments`` (the ingress serves it) and only reads the tables that
``pipelines.schema`` creates; every value is a bound parameter.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from serve_ml.bundles.catalog import Catalog
from serve_ml.core.errors import GatewayTimeout, Unavailable

MAX_ROWS = 10_000


HISTORY_STATEMENT_TIMEOUT_MS = 10_000


class History:
    def __init__(self, database_url: str | None) -> None:
        self.database_url = database_url
        self._pool: asyncpg.Pool | None = None

    async def pool(self) -> asyncpg.Pool:
        """The pool (created on first use), for other readers of the same database."""
        return await self._get_pool()

    async def _get_pool(self) -> asyncpg.Pool:
        if self.database_url is None:
            raise Unavailable("no database is configured (set DATABASE_URL or run `make up`)")
        if self._pool is None:
            try:
                self._pool = await asyncpg.create_pool(
                    self.database_url, min_size=0, max_size=4,
                    # a read that runs away (a huge range on a cold database) is cut off by
                    # the server, not left holding a connection and the request
                    server_settings={"statement_timeout": str(HISTORY_STATEMENT_TIMEOUT_MS)})
            except (OSError, asyncpg.PostgresError) as exc:
                raise Unavailable(f"database unavailable: {type(exc).__name__}") from None
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        pool = await self._get_pool()
        try:
            rows = await pool.fetch(sql, *args)
        except asyncpg.QueryCanceledError:
            raise GatewayTimeout(f"the query ran past {HISTORY_STATEMENT_TIMEOUT_MS / 1000:g} s: "
                                 "ask for a shorter range or a smaller limit") from None
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            raise Unavailable(f"database unavailable: {type(exc).__name__}") from None
        return [_jsonable(dict(r)) for r in rows]

    async def predictions(self, equipment_id: str, start: dt.datetime, end: dt.datetime, limit: int) -> list[dict]:
        return await self._fetch(
            "SELECT time, equipment_id, power, model_version, anomaly, score, modalities, fault_label, "
            "fault_probabilities, rul, rul_lower, rul_upper FROM serve_ml_predictions WHERE equipment_id = $1 AND time >= $2 AND time < $3 "
            "ORDER BY time DESC LIMIT $4", equipment_id, start, end, min(limit, MAX_ROWS))

    async def readings(self, equipment_id: str, start: dt.datetime, end: dt.datetime, limit: int) -> list[dict]:
        return await self._fetch(
            "SELECT time, equipment_id, power, features, source FROM serve_ml_readings "
            "WHERE equipment_id = $1 AND time >= $2 AND time < $3 ORDER BY time DESC LIMIT $4",
            equipment_id, start, end, min(limit, MAX_ROWS))

    async def alerts(self, equipment_id: str | None, status: str | None, limit: int) -> list[dict]:
        return await self._fetch(
            "SELECT id, kind, equipment_id, power, model_version, status, severity, opened_at, last_seen_at, "
            "resolved_at, peak_score, anomalies, fault_label, modalities FROM serve_ml_alerts "
            "WHERE ($1::text IS NULL OR equipment_id = $1) AND ($2::text IS NULL OR status = $2) "
            "ORDER BY opened_at DESC LIMIT $3", equipment_id, status, min(limit, MAX_ROWS))


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    for k, v in row.items():
        if isinstance(v, dt.datetime):
            row[k] = v.isoformat()
        elif isinstance(v, str) and k in ("modalities", "fault_probabilities", "features"):
            row[k] = orjson.loads(v)
    return row


async def record_change(history: History, entry: dict[str, Any], override: dict[str, Any] | None) -> bool:
    """Persist a live-version change; False when no database is configured or reachable."""
    if history.database_url is None:
        return False
    try:
        pool = await history._get_pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO serve_ml_model_events (at, equipment_id, power, model_version, event, reason, "
                "from_version) VALUES (to_timestamp($1), $2, $3, $4, $5, $6, $7)",
                entry["at"], entry["equipment_id"], entry["power"], entry["to"], entry["action"], entry["reason"],
                entry["from"])
            if override is None:
                await conn.execute("DELETE FROM serve_ml_live_overrides WHERE equipment_id = $1 AND power = $2",
                                   entry["equipment_id"], entry["power"])
            else:
                await conn.execute(
                    "INSERT INTO serve_ml_live_overrides (equipment_id, power, model_version, pinned, newest_at_set, "
                    "reason) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (equipment_id, power) DO UPDATE SET "
                    "model_version = EXCLUDED.model_version, pinned = EXCLUDED.pinned, "
                    "newest_at_set = EXCLUDED.newest_at_set, reason = EXCLUDED.reason, set_at = now()",
                    entry["equipment_id"], entry["power"], override["version"], override["pinned"],
                    override["newest_at_set"], entry["reason"])
        return True
    except (Unavailable, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False


async def load_state(history: History) -> tuple[dict, list[dict]] | None:
    """Overrides and change history persisted by earlier runs (None: no database)."""
    if history.database_url is None:
        return None
    try:
        pool = await history._get_pool()
        rows = await pool.fetch("SELECT * FROM serve_ml_live_overrides")
        events = await pool.fetch("SELECT extract(epoch FROM at) AS at, event, equipment_id, power, from_version, "
                                  "model_version, reason FROM serve_ml_model_events ORDER BY id")
    except (Unavailable, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return None
    overrides = {(r["equipment_id"], r["power"]): {"version": r["model_version"], "pinned": r["pinned"],
                                                  "newest_at_set": r["newest_at_set"]} for r in rows}
    hist = [{"at": float(e["at"]), "action": e["event"], "equipment_id": e["equipment_id"], "power": e["power"],
             "from": e["from_version"], "to": e["model_version"], "reason": e["reason"]} for e in events]
    return overrides, hist


def catalog_rows(catalog: Catalog) -> list[tuple[str, str, str, str, str, str | None, bool]]:
    """One ``serve_ml_models`` row per bundle the scan saw, rejected ones included.

    A rejected bundle is named by where it sits under the root, never by where a
    link in it points (the loader refuses links that leave the root, and those
    must be recorded too)."""
    rows: list[tuple[str, str, str, str, str, str | None, bool]] = [(eq, p, v, b.digest, "live" if catalog.live.get((eq, p)) == v else "loaded", None,
             catalog.pinned.get((eq, p), False) and catalog.live.get((eq, p)) == v)
            for (eq, p, v), b in catalog.bundles.items()]
    for r in catalog.rejected:
        path = Path(r.path)
        parts = path.relative_to(catalog.root).parts if path.is_relative_to(catalog.root) else ()
        if len(parts) == 3:
            rows.append((*parts, "", "rejected", r.reason[:1000], False))
    return rows


def load_state_once(database_url: str) -> tuple[dict, list[dict]] | None:
    """``load_state`` from synchronous code, on a connection of its own."""
    async def go() -> tuple[dict, list[dict]] | None:
        history = History(database_url)
        try:
            return await load_state(history)
        finally:
            await history.close()

    return asyncio.run(go())


async def record_catalog(history: History, catalog: Catalog) -> bool:
    """Upsert every known bundle into ``serve_ml_models`` with its status.

    live / loaded / rejected (with the reason) / removed (known before, gone now);
    ``activated_at`` is stamped when a version becomes live. False without a database.
    """
    if history.database_url is None:
        return False
    rows = catalog_rows(catalog)
    try:
        pool = await history._get_pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO serve_ml_models (equipment_id, power, model_version, sha256, status, reason, pinned, "
                "loaded_at, activated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now(), "
                "CASE WHEN $5 = 'live' THEN now() END) "
                "ON CONFLICT (equipment_id, power, model_version) DO UPDATE SET sha256 = EXCLUDED.sha256, "
                "status = EXCLUDED.status, reason = EXCLUDED.reason, pinned = EXCLUDED.pinned, "
                "activated_at = CASE WHEN EXCLUDED.status = 'live' AND serve_ml_models.status <> 'live' THEN now() "
                "ELSE serve_ml_models.activated_at END", rows)
            await conn.execute(
                "UPDATE serve_ml_models SET status = 'removed' WHERE status <> 'removed' AND NOT "
                "((equipment_id, power, model_version) = ANY(SELECT * FROM unnest($1::text[], $2::text[], $3::text[])))",
                [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
        return True
    except (Unavailable, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
