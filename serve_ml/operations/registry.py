"""The equipment registry and its location tree.

A location is a path of any depth the operator uses (site / building / floor /
line / area, or fewer). Equipment the stream has seen but nobody registered is
listed as unregistered (it has a live status row and no registry row), never
dropped.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from serve_ml.core.errors import NotFound
from serve_ml.core.reading import MAX_NAME_CHARS
from serve_ml.operations.db import OpsDB, bump_generation, jsonable
from serve_ml.operations.thresholds import LOCATION_PART_PATTERN, Placement, location_path

MAX_LOCATION_DEPTH = 8


class EquipmentIn(BaseModel):
    """An equipment's registry entry, as written by an operator."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200, description="Human name shown to operators.")
    type: str | None = Field(default=None, max_length=MAX_NAME_CHARS,
                             description="Equipment type (thresholds can be set per type).")
    power: str | None = Field(default=None, max_length=MAX_NAME_CHARS, description="Power class, e.g. 5kW.")
    location: list[Annotated[str, Field(pattern=LOCATION_PART_PATTERN)]] = Field(
                                default_factory=list, max_length=MAX_LOCATION_DEPTH,
                                description='Path from the root, e.g. ["site-a", "hall-1", "line-2"]; '
                                            'a "site-a/hall-1/line-2" string is accepted too.')
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free key/value data.")

    @field_validator("location", mode="before")
    @classmethod
    def _path(cls, v: Any) -> Any:
        if isinstance(v, str):
            return list(location_path(v))
        if isinstance(v, list) and all(isinstance(p, str) for p in v):
            return list(location_path(v))
        return v


class Registry:
    def __init__(self, db: OpsDB) -> None:
        self.db = db

    async def find(self, location: tuple[str, ...] = (), type_: str | None = None) -> dict[str, Any]:
        rows = await self.db.fetch(
            "SELECT * FROM serve_ml_equipment WHERE location[1:$1] = $2::text[] AND ($3::text IS NULL OR type = $3) "
            "ORDER BY equipment_id", len(location), list(location), type_)
        unregistered = [] if location or type_ else [r["equipment_id"] for r in await self.db.fetch(
            "SELECT s.equipment_id FROM serve_ml_status s LEFT JOIN serve_ml_equipment e USING (equipment_id) "
            "WHERE e.equipment_id IS NULL ORDER BY 1")]
        return {"equipment": rows, "unregistered": unregistered}

    async def get(self, equipment_id: str) -> dict[str, Any]:
        row = await self.db.fetchrow("SELECT * FROM serve_ml_equipment WHERE equipment_id = $1", equipment_id)
        if row is None:
            raise NotFound(f"equipment {equipment_id!r} is not registered")
        return row

    async def put(self, equipment_id: str, body: EquipmentIn) -> tuple[dict[str, Any], bool]:
        """Create or replace; returns the row and whether it was created."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "INSERT INTO serve_ml_equipment (equipment_id, name, type, power, location, metadata) "
                "VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT (equipment_id) DO UPDATE SET name = $2, "
                "type = $3, power = $4, location = $5, metadata = $6::jsonb, updated_at = now() "
                "RETURNING *, (xmax = 0) AS created",
                equipment_id, body.name, body.type, body.power, body.location, orjson.dumps(body.metadata).decode())
            await bump_generation(conn)
        out = dict(row)
        created = out.pop("created")
        return jsonable(out), bool(created)

    async def delete(self, equipment_id: str) -> None:
        async with self.db.transaction() as conn:
            done = await conn.execute("DELETE FROM serve_ml_equipment WHERE equipment_id = $1", equipment_id)
            if done.endswith(" 0"):
                raise NotFound(f"equipment {equipment_id!r} is not registered")
            await bump_generation(conn)

    async def tree(self) -> dict[str, Any]:
        """The location tree: every node with its registered equipment counted
        (its own and below), children by name."""
        rows = await self.db.fetch("SELECT location, count(*) AS n FROM serve_ml_equipment GROUP BY location")
        root: dict[str, Any] = {"name": "", "path": "", "equipment": 0, "children": {}}
        for r in rows:
            node = root
            node["equipment"] += r["n"]
            for depth, part in enumerate(r["location"]):
                node = node["children"].setdefault(part, {"name": part, "path": "/".join(r["location"][:depth + 1]),
                                                          "equipment": 0, "children": {}})
                node["equipment"] += r["n"]
        return _listed(root)


def _listed(node: dict[str, Any]) -> dict[str, Any]:
    return {**node, "children": [_listed(c) for _, c in sorted(node["children"].items())]}


async def placements(conn: Any) -> dict[str, Placement]:
    """Every registered equipment's type and location (for threshold resolution)."""
    return {r["equipment_id"]: Placement(r["type"], tuple(r["location"]))
            for r in await conn.fetch("SELECT equipment_id, type, location FROM serve_ml_equipment")}
