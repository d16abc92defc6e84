"""What the stream stored: predictions, readings and alerts of a time window."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from serve_ml.core.errors import InvalidQuery
from serve_ml.core.reading import MAX_NAME_CHARS
from serve_ml.deployments.api.body import OrjsonRoute
from serve_ml.deployments.api.deps import READ_ERRORS, READ_ONLY, CoreDep, json_response
from serve_ml.deployments.edge import PREFIX

router = APIRouter(prefix=PREFIX, route_class=OrjsonRoute)



def _window(start: dt.datetime | None, end: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    end = end or dt.datetime.now(dt.UTC)
    try:
        start = start or end - dt.timedelta(hours=1)
    except OverflowError:
        raise InvalidQuery("end is too early to look back an hour from: give start as well") from None
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidQuery("start and end need a timezone (e.g. 2026-11-23T10:00:00Z)")
    if start >= end:
        raise InvalidQuery("start must be before end")
    return start, end

@router.get("/equipment/{equipment_id}/predictions", dependencies=READ_ONLY, responses=READ_ERRORS)
async def predictions(core: CoreDep, equipment_id: str, start: dt.datetime | None = None, end: dt.datetime | None = None,
                      limit: int = Query(default=1000, ge=1, le=10_000)) -> Response:
    """Stored predictions of one equipment in [start, end) (default: the last hour), newest first."""
    s, e = _window(start, end)
    return json_response({"predictions": await core.history.predictions(equipment_id, s, e, limit)})

@router.get("/equipment/{equipment_id}/readings", dependencies=READ_ONLY, responses=READ_ERRORS)
async def readings(core: CoreDep, equipment_id: str, start: dt.datetime | None = None, end: dt.datetime | None = None,
                   limit: int = Query(default=1000, ge=1, le=10_000)) -> Response:
    """Stored raw readings of one equipment in [start, end) (default: the last hour), newest first."""
    s, e = _window(start, end)
    return json_response({"readings": await core.history.readings(equipment_id, s, e, limit)})

@router.get("/alerts", dependencies=READ_ONLY, responses=READ_ERRORS)
async def alerts(core: CoreDep, equipment_id: str | None = Query(default=None, max_length=MAX_NAME_CHARS),
                 status: Literal["open", "resolved"] | None = None,
                 limit: int = Query(default=100, ge=1, le=10_000)) -> Response:
    """Alerts, newest first; filter by equipment and status."""
    return json_response({"alerts": await core.history.alerts(equipment_id, status, limit)})
