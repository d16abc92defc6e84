"""The audit trail of management and operator actions (admin only)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Query
from fastapi.responses import Response

from serve_ml.deployments.api.body import OrjsonRoute
from serve_ml.deployments.api.deps import EDGE, MANAGE, CoreDep, errors, json_response
from serve_ml.deployments.edge import PREFIX

router = APIRouter(prefix=PREFIX, route_class=OrjsonRoute)


@router.get("/audit", dependencies=MANAGE, responses=errors(401, 403, 422, *EDGE))
async def audit(core: CoreDep, subject: str | None = Query(default=None, max_length=200,
                                                           description="Who: jwt:<sub> or token:<role>."),
                path_prefix: str | None = Query(default=None, max_length=1000,
                                                description="Only actions on paths starting with this."),
                start: dt.datetime | None = None, end: dt.datetime | None = None,
                limit: int = Query(default=100, ge=1, le=10_000)) -> Response:
    """Management and operator actions, newest first: who (subject and role), what
    (method, route, path, status; refused attempts included), when, from where."""
    return json_response({"entries": await core.operations.audit.find(
        subject=subject, path_prefix=path_prefix, start=start, end=end, limit=limit)})
