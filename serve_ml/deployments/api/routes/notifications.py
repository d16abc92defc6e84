"""The notification delivery log."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import Response

from serve_ml.deployments.api.body import OrjsonRoute
from serve_ml.deployments.api.deps import READ_ERRORS, READ_ONLY, CoreDep, json_response
from serve_ml.deployments.edge import PREFIX
from serve_ml.operations.deliveries import DeliveryStatus

router = APIRouter(prefix=PREFIX, route_class=OrjsonRoute)


@router.get("/notifications", dependencies=READ_ONLY, responses=READ_ERRORS)
async def notifications(core: CoreDep, sink: str | None = Query(default=None, max_length=100),
                        status: DeliveryStatus | None = None, alarm_id: int | None = Query(default=None, ge=1),
                        limit: int = Query(default=100, ge=1, le=10_000)) -> Response:
    """Deliveries newest first: the event, the sink, pending/delivered/failed, and every attempt."""
    return json_response({"deliveries": await core.operations.deliveries.find(
        sink=sink, status=status, alarm_id=alarm_id, limit=limit)})
