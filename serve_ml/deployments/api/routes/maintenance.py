"""Maintenance windows: declare, list, end early."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from serve_ml.deployments.api.body import OrjsonRoute
from serve_ml.deployments.api.deps import OPERATE_ERRORS, READ_ERRORS, READ_ONLY, CoreDep, OperatorRole, json_response
from serve_ml.deployments.api.routes.equipment import parse_location
from serve_ml.deployments.api.routes.thresholds import actor_of
from serve_ml.deployments.edge import PREFIX
from serve_ml.operations.maintenance import WindowIn

router = APIRouter(prefix=PREFIX, route_class=OrjsonRoute)


@router.post("/maintenance", status_code=201, responses=OPERATE_ERRORS)
async def create_window(core: CoreDep, role: OperatorRole, body: WindowIn) -> Response:
    """Declare a window (operator): alarms of that equipment, or of everything at or
    under that location, that open between the two times are recorded but not
    published (no alerts-topic event, notification or live push)."""
    target = "/".join(parse_location(body.target)) if body.scope == "location" else body.target
    return json_response(await core.operations.maintenance.create(body, target, actor_of(role, body.actor)), 201)


@router.get("/maintenance", dependencies=READ_ONLY, responses=READ_ERRORS)
async def list_windows(core: CoreDep, active_at: dt.datetime | None = None,
                       limit: int = Query(default=100, ge=1, le=10_000)) -> Response:
    """Windows, latest start first (``active_at``: only those open then), each with the alarms it suppressed."""
    return json_response({"windows": await core.operations.maintenance.find(active_at=active_at, limit=limit)})


@router.post("/maintenance/{window_id}/end", responses=OPERATE_ERRORS)
async def end_window(core: CoreDep, role: OperatorRole, window_id: int = Path(ge=1, le=2**63 - 1)) -> Response:
    """End a window now (operator)."""
    return json_response(await core.operations.maintenance.end(window_id, role))
