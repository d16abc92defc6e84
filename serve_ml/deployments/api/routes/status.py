"""Live status per equipment and per location node, and the hourly/daily aggregates."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Query
from fastapi.responses import Response

from serve_ml.core.errors import InvalidQuery, NotFound
from serve_ml.deployments.api.body import OrjsonRoute
from serve_ml.deployments.api.deps import READ_ERRORS, READ_ONLY, CoreDep, errors, json_response
from serve_ml.deployments.api.routes.equipment import EquipmentId, LocationQuery, parse_location
from serve_ml.deployments.edge import PREFIX
from serve_ml.operations.aggregates import Interval, compact_range

router = APIRouter(prefix=PREFIX, route_class=OrjsonRoute)


@router.get("/status", dependencies=READ_ONLY, responses=READ_ERRORS)
async def status(core: CoreDep, location: LocationQuery = None) -> Response:
    """Every equipment's status (normal, warning, critical, no_data) with its reasons,
    and the location tree under ``location`` rolled up worst-of."""
    return json_response(await core.operations.status.rollup(parse_location(location)))


@router.get("/equipment/{equipment_id}/status", dependencies=READ_ONLY,
            responses=errors(401, 403, 404, 422, 413, 503, 504))
async def equipment_status(core: CoreDep, equipment_id: EquipmentId) -> Response:
    """One equipment's status and why."""
    row = await core.operations.status.one(equipment_id)
    if row is None:
        raise NotFound(f"equipment {equipment_id!r} is neither registered nor seen on the stream")
    return json_response(row)


@router.get("/equipment/{equipment_id}/aggregates", dependencies=READ_ONLY, responses=READ_ERRORS)
async def aggregates(core: CoreDep, equipment_id: EquipmentId, interval: Interval = "1h",
                     start: dt.datetime | None = None, end: dt.datetime | None = None,
                     range: str | None = Query(default=None, max_length=8,  # noqa: A002
                                               description="yyyy, yyyyMM or yyyyMMdd (UTC) instead of start/end.")
                     ) -> Response:
    """Min/max/avg/count per sensor and reading/anomaly counts per hour or UTC day
    (default: the last 24 hours)."""
    if range is not None:
        if start is not None or end is not None:
            raise InvalidQuery("give either range or start/end, not both")
        s, e = compact_range(range)
    else:
        e = end or dt.datetime.now(dt.UTC)
        s = start or e - dt.timedelta(days=1)
        if s.tzinfo is None or e.tzinfo is None:
            raise InvalidQuery("start and end need a timezone (e.g. 2026-12-05T10:00:00Z)")
        if s >= e:
            raise InvalidQuery("start must be before end")
    buckets = await core.operations.aggregates.query(equipment_id, interval, s, e)
    return json_response({"equipment_id": equipment_id, "interval": interval, "start": s.isoformat(),
                          "end": e.isoformat(), "buckets": buckets})
