"""Live status per equipment, read in one query: the stream keeps one row per
equipment current (``serve_ml_status``, written with each batch); ``no_data`` is
decided when reading (nothing arrived for ``stale_after_s``), so a silent machine
needs no writer to notice it. Location nodes roll up worst-of their equipment."""

from __future__ import annotations

from typing import Any

from serve_ml.operations.db import OpsDB

STATUSES = ("normal", "no_data", "warning", "critical")  # worst last
_RANK = {s: i for i, s in enumerate(STATUSES)}


class Status:
    def __init__(self, db: OpsDB, stale_after_s: float) -> None:
        self.db = db
        self.stale_after_s = stale_after_s

    async def equipment(self, location: tuple[str, ...] = (), equipment_id: str | None = None
                        ) -> list[dict[str, Any]]:
        """Every registered or seen equipment under ``location`` (or the one named): its status and why."""
        return await self.db.fetch(
            "SELECT coalesce(e.equipment_id, s.equipment_id) AS equipment_id, e.name, e.type, "
            "coalesce(e.location, '{}') AS location, e.equipment_id IS NOT NULL AS registered, "
            "CASE WHEN s.equipment_id IS NULL OR s.updated_at < now() - make_interval(secs => $3) "
            "THEN 'no_data' ELSE s.status END AS status, coalesce(s.reasons, '[]') AS reasons, "
            "s.last_reading_at, s.updated_at, "
            "(SELECT count(*) FROM serve_ml_alerts a WHERE a.status = 'open' "
            " AND a.equipment_id = coalesce(e.equipment_id, s.equipment_id)) AS active_alarms "
            "FROM serve_ml_equipment e FULL JOIN serve_ml_status s USING (equipment_id) "
            "WHERE ($1 = 0 OR e.location[1:$1] = $2::text[]) "
            "AND ($4::text IS NULL OR coalesce(e.equipment_id, s.equipment_id) = $4) ORDER BY 1",
            len(location), list(location), float(self.stale_after_s), equipment_id)

    async def one(self, equipment_id: str) -> dict[str, Any] | None:
        rows = await self.equipment(equipment_id=equipment_id)
        return rows[0] if rows else None

    async def rollup(self, location: tuple[str, ...] = ()) -> dict[str, Any]:
        """The location tree under ``location`` with each node's worst status and
        counts per status, and the equipment themselves."""
        rows = await self.equipment(location)
        root = _node(location[-1] if location else "", "/".join(location))
        for r in rows:
            path = list(r["location"])[len(location):] if r["registered"] else ["(unregistered)"]
            node = root
            _count(node, r)
            for depth, part in enumerate(path):
                full = "/".join([*location, *path[:depth + 1]])
                node = node["children"].setdefault(part, _node(part, full))
                _count(node, r)
        return {"tree": _listed(root), "equipment": rows}


def _node(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "path": path, "status": "normal", "counts": dict.fromkeys(STATUSES, 0),
            "active_alarms": 0, "children": {}}


def _count(node: dict[str, Any], row: dict[str, Any]) -> None:
    node["counts"][row["status"]] += 1
    node["active_alarms"] += row["active_alarms"]
    if _RANK[row["status"]] > _RANK[node["status"]]:
        node["status"] = row["status"]


def _listed(node: dict[str, Any]) -> dict[str, Any]:
    return {**node, "children": [_listed(c) for _, c in sorted(node["children"].items())]}
