"""Alarms: list with filters, one alarm with its timeline, acknowledge, clear."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

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
from serve_ml.deployments.api.routes.equipment import LocationQuery, parse_location
from serve_ml.deployments.api.routes.thresholds import actor_of
from serve_ml.deployments.edge import PREFIX
from serve_ml.operations.alarm_store import AlarmState, AlarmType, Severity

router = APIRouter(prefix=PREFIX, route_class=OrjsonRoute)
AlarmId = Path(ge=1, le=2**63 - 1)


class AlarmAction(BaseModel):
    """An acknowledgement or a clearing, with who and why."""

    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(default=None, max_length=2000, description="Kept in the alarm's timeline.")
    actor: str | None = Field(default=None, max_length=200,
                              description="Who, as a name (the token's role is recorded with it).")


@router.get("/alarms", dependencies=READ_ONLY, responses=READ_ERRORS)
async def list_alarms(core: CoreDep, state: AlarmState | None = None, severity: Severity | None = None,
                      type: AlarmType | None = None,  # noqa: A002
                      equipment_id: str | None = Query(default=None, max_length=MAX_NAME_CHARS),
                      location: LocationQuery = None, start: dt.datetime | None = None,
                      end: dt.datetime | None = None, limit: int = Query(default=100, ge=1, le=10_000)) -> Response:
    """Alarms, newest first, by state, severity, type, equipment, location and opening time."""
    return json_response({"alarms": await core.operations.alarms.find(
        state=state, severity=severity, type_=type, equipment_id=equipment_id, location=parse_location(location),
        start=start, end=end, limit=limit)})


@router.get("/alarms/{alarm_id}", dependencies=READ_ONLY, responses=errors(401, 403, 404, 422, 413, 503, 504))
async def get_alarm(core: CoreDep, alarm_id: int = AlarmId) -> Response:
    """One alarm and its whole timeline (opened, severity changes, acknowledged, cleared)."""
    return json_response(await core.operations.alarms.get(alarm_id))


@router.post("/alarms/{alarm_id}/ack", responses=OPERATE_ERRORS)
async def ack_alarm(core: CoreDep, role: OperatorRole, body: AlarmAction | None = None,
                    alarm_id: int = AlarmId) -> Response:
    """Acknowledge (operator). Acknowledging twice changes nothing."""
    body = body or AlarmAction()
    return json_response(await core.operations.alarms.ack(alarm_id, actor=actor_of(role, body.actor),
                                                          comment=body.comment))


@router.post("/alarms/{alarm_id}/clear", responses=OPERATE_ERRORS)
async def clear_alarm(core: CoreDep, role: OperatorRole, body: AlarmAction | None = None,
                      alarm_id: int = AlarmId) -> Response:
    """Clear an active alarm (operator). If its condition persists, a new alarm opens."""
    body = body or AlarmAction()
    return json_response(await core.operations.alarms.clear(alarm_id, actor=actor_of(role, body.actor),
                                                            comment=body.comment))
