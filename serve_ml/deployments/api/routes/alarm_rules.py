"""Alarm rules: when flagged readings raise an alarm and when it clears, per scope
and alarm type; set, delete, list, which apply, and their history."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import Field

from serve_ml.deployments.api.body import OrjsonRoute
from serve_ml.deployments.api.deps import (
    OPERATE_ERRORS,
    READ_ERRORS,
    READ_ONLY,
    CoreDep,
    OperatorRole,
    json_response,
)
from serve_ml.deployments.api.routes.equipment import EquipmentId
from serve_ml.deployments.api.routes.thresholds import Target, actor_of, scoped_target
from serve_ml.deployments.edge import PREFIX
from serve_ml.operations.alarm_rules import AlarmKind, AlarmRule
from serve_ml.operations.scopes import Scope

router = APIRouter(prefix=PREFIX, route_class=OrjsonRoute)


class AlarmRuleIn(AlarmRule):
    """One alarm type's rule at one scope, and why it changes."""

    scope: Scope = Field(description="equipment, type or location: the most specific applies.")
    target: str = Field(min_length=1, max_length=1000, description="Equipment id, type, or location path.")
    kind: AlarmKind = Field(description="The alarm type it governs, or * for every type at that scope "
                                        "(a rule for the type itself wins at the same scope).")
    reason: str = Field(min_length=1, max_length=2000, description="Why: kept in the rule history.")
    actor: str | None = Field(default=None, max_length=200,
                              description="Who, as a name for the history (the token's role is recorded too).")


@router.get("/alarm-rules", dependencies=READ_ONLY, responses=READ_ERRORS)
async def list_rules(core: CoreDep, scope: Scope | None = None,
                     target: str | None = Query(default=None, max_length=1000)) -> Response:
    """Stored alarm rules, by scope and target."""
    return json_response({"rules": await core.operations.alarm_rules.find(
        scope, None if target is None or scope is None else scoped_target(scope, target))})


@router.put("/alarm-rules", responses=OPERATE_ERRORS)
async def set_rule(core: CoreDep, role: OperatorRole, body: AlarmRuleIn) -> Response:
    """Set one alarm type's rule at one scope (operator); the stream applies it from its
    next batch, and the previous rule goes to the history."""
    rule = AlarmRule(**body.model_dump(include=set(AlarmRule.model_fields)))
    return json_response(await core.operations.alarm_rules.set(
        body.scope, scoped_target(body.scope, body.target), body.kind, rule, actor=actor_of(role, body.actor),
        reason=body.reason))


@router.delete("/alarm-rules", responses=OPERATE_ERRORS)
async def delete_rule(core: CoreDep, role: OperatorRole, scope: Scope, target: Target, kind: AlarmKind,
                      reason: str = Query(min_length=1, max_length=2000),
                      actor: str | None = Query(default=None, max_length=200)) -> Response:
    """Remove one rule (operator): a less specific one, or the default, applies again."""
    return json_response(await core.operations.alarm_rules.delete(scope, scoped_target(scope, target), kind,
                                                                  actor=actor_of(role, actor), reason=reason))


@router.get("/alarm-rules/history", dependencies=READ_ONLY, responses=READ_ERRORS)
async def rule_history(core: CoreDep, scope: Scope | None = None,
                       target: str | None = Query(default=None, max_length=1000), kind: AlarmKind | None = None,
                       limit: int = Query(default=100, ge=1, le=10_000)) -> Response:
    """Every change, newest first: who, when, why, the previous and the new rule."""
    t = None if target is None else (scoped_target(scope, target) if scope else target)
    return json_response({"history": await core.operations.alarm_rules.history(scope, t, kind, limit)})


@router.get("/equipment/{equipment_id}/alarm-rules", dependencies=READ_ONLY, responses=READ_ERRORS)
async def applied_rules(core: CoreDep, equipment_id: EquipmentId) -> Response:
    """Per alarm type, the rule that applies to one equipment and the scope it comes from
    (scope null: the default, an alarm on the first flagged reading)."""
    return json_response({"equipment_id": equipment_id,
                          "rules": await core.operations.alarm_rules.applied(equipment_id)})
