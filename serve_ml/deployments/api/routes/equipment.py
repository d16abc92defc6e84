"""The equipment registry and the location tree."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from serve_ml.core.errors import InvalidQuery
from serve_ml.core.reading import MAX_NAME_CHARS
from serve_ml.deployments.api.body import OrjsonRoute
from serve_ml.deployments.api.deps import (
    OPERATE_ERRORS,
    READ_ERRORS,
    READ_ONLY,
    CoreDep,
    OperatorRole,
    errors,
    json_response,
)
from serve_ml.deployments.edge import PREFIX
from serve_ml.operations.registry import EquipmentIn
from serve_ml.operations.thresholds import LOCATION_PATTERN, location_path

router = APIRouter(prefix=PREFIX, route_class=OrjsonRoute)
EquipmentId = Annotated[str, Path(min_length=1, max_length=MAX_NAME_CHARS)]
LocationQuery = Annotated[str | None, Query(max_length=1000, pattern=LOCATION_PATTERN,
                                            description='A location path, e.g. "site-a/hall-1".')]


def parse_location(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    try:
        return location_path(text)
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from None


@router.get("/equipment", dependencies=READ_ONLY, responses=READ_ERRORS)
async def list_equipment(core: CoreDep, location: LocationQuery = None,
                         type: str | None = Query(default=None, max_length=MAX_NAME_CHARS)) -> Response:  # noqa: A002
    """Registered equipment (under a location, of a type); without filters also the
    ids the stream has seen that nobody registered (``unregistered``)."""
    return json_response(await core.operations.registry.find(parse_location(location), type))


@router.get("/equipment/{equipment_id}", dependencies=READ_ONLY, responses=errors(401, 403, 404, 422, 413, 503, 504))
async def get_equipment(core: CoreDep, equipment_id: EquipmentId) -> Response:
    """One registry entry."""
    return json_response(await core.operations.registry.get(equipment_id))


@router.put("/equipment/{equipment_id}", responses={"201": {"description": "Registered (a new entry)."},
                                                    **OPERATE_ERRORS})
async def put_equipment(core: CoreDep, role: OperatorRole, equipment_id: EquipmentId, body: EquipmentIn) -> Response:
    """Register an equipment or replace its entry (operator). 201 when created."""
    row, created = await core.operations.registry.put(equipment_id, body)
    return json_response(row, 201 if created else 200)


@router.delete("/equipment/{equipment_id}", responses=OPERATE_ERRORS)
async def delete_equipment(core: CoreDep, role: OperatorRole, equipment_id: EquipmentId) -> Response:
    """Remove a registry entry (operator). Its stored data stays; the stream keeps
    scoring it, and it shows as unregistered."""
    await core.operations.registry.delete(equipment_id)
    return json_response({"deleted": equipment_id})


@router.get("/locations", dependencies=READ_ONLY, responses=READ_ERRORS)
async def locations(core: CoreDep) -> Response:
    """The location tree, each node with how many registered equipment it holds."""
    return json_response(await core.operations.registry.tree())
