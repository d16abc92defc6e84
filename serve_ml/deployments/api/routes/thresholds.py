"""Raw sensor thresholds: set, delete, list, which apply, and their history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import Field

from serve_ml.core.reading import MAX_NAME_CHARS
from serve_ml.deployments.api.body import OrjsonRoute
from serve_ml.deployments.api.deps import (
    OPERATE_ERRORS,
    READ_ERRORS,
    READ_ONLY,
    CoreDep,
    OperatorRole,
    json_response,
)
from serve_ml.deployments.api.routes.equipment import EquipmentId, parse_location
from serve_ml.deployments.edge import PREFIX
from serve_ml.operations.thresholds import Limits, Scope

router = APIRouter(prefix=PREFIX, route_class=OrjsonRoute)
Target = Annotated[str, Query(min_length=1, max_length=1000,
                              description="Equipment id, type name, or location path (site-a/hall-1).")]
Sensor = Annotated[str, Query(min_length=1, max_length=MAX_NAME_CHARS, description="Feature name.")]


class ThresholdIn(Limits):
    """One sensor's limits at one scope, and why they change."""

    scope: Scope = Field(description="equipment, type or location: the most specific applies.")
    target: str = Field(min_length=1, max_length=1000, description="Equipment id, type, or location path.")
    sensor: str = Field(min_length=1, max_length=MAX_NAME_CHARS, description="The feature the limits apply to.")
    reason: str = Field(min_length=1, max_length=2000, description="Why: kept in the threshold history.")
    actor: str | None = Field(default=None, max_length=200,
                              description="Who, as a name for the history (the token's role is recorded too).")


def scoped_target(scope: Scope, target: str) -> str:
    """A target as stored: a location path normalised, anything else as given."""
    return "/".join(parse_location(target)) if scope == "location" else target


def actor_of(role: str, actor: str | None) -> str:
    """Who acted, for the audit trail: the name given, qualified by the token's role
    (a static token proves the role, not the name)."""
    return f"{actor} ({role})" if actor else role


@router.get("/thresholds", dependencies=READ_ONLY, responses=READ_ERRORS)
async def list_thresholds(core: CoreDep, scope: Scope | None = None,
                          target: str | None = Query(default=None, max_length=1000)) -> Response:
    """Stored thresholds, by scope and target."""
    return json_response({"thresholds": await core.operations.thresholds.find(
        scope, None if target is None or scope is None else scoped_target(scope, target))})


@router.put("/thresholds", responses=OPERATE_ERRORS)
async def set_threshold(core: CoreDep, role: OperatorRole, body: ThresholdIn) -> Response:
    """Set one sensor's limits at one scope (operator); the previous value goes to the history."""
    limits = Limits(**body.model_dump(include=set(Limits.model_fields)))
    row = await core.operations.thresholds.set(body.scope, scoped_target(body.scope, body.target), body.sensor, limits,
                                               actor=actor_of(role, body.actor), reason=body.reason)
    return json_response(row)


@router.delete("/thresholds", responses=OPERATE_ERRORS)
async def delete_threshold(core: CoreDep, role: OperatorRole, scope: Scope, target: Target, sensor: Sensor,
                           reason: str = Query(min_length=1, max_length=2000),
                           actor: str | None = Query(default=None, max_length=200)) -> Response:
    """Remove one threshold (operator). Open threshold alarms no limit covers any more are cleared."""
    return json_response(await core.operations.thresholds.delete(scope, scoped_target(scope, target), sensor,
                                                                 actor=actor_of(role, actor), reason=reason))


@router.get("/thresholds/history", dependencies=READ_ONLY, responses=READ_ERRORS)
async def threshold_history(core: CoreDep, scope: Scope | None = None,
                            target: str | None = Query(default=None, max_length=1000),
                            sensor: str | None = Query(default=None, max_length=MAX_NAME_CHARS),
                            limit: int = Query(default=100, ge=1, le=10_000)) -> Response:
    """Every change, newest first: who, when, why, the previous and the new limits."""
    t = None if target is None else (scoped_target(scope, target) if scope else target)
    return json_response({"history": await core.operations.thresholds.history(scope, t, sensor, limit)})


@router.get("/equipment/{equipment_id}/thresholds", dependencies=READ_ONLY, responses=READ_ERRORS)
async def applied_thresholds(core: CoreDep, equipment_id: EquipmentId) -> Response:
    """The limits that apply to one equipment, per sensor, and the scope each comes from."""
    return json_response({"equipment_id": equipment_id,
                          "thresholds": await core.operations.thresholds.applied(equipment_id)})
