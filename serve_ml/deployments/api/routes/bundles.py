"""Bundles and their management: list, sync, upload, activate, roll back, unpin."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from serve_ml.core.reading import MAX_NAME_CHARS
from serve_ml.deployments.api.body import OrjsonRoute
from serve_ml.deployments.api.deps import (
    EDGE,
    MANAGE,
    MANAGE_ERRORS,
    READ_ERRORS,
    READ_ONLY,
    CoreDep,
    errors,
    json_response,
)
from serve_ml.deployments.edge import PREFIX
from serve_ml.deployments.schemas import ActivateRequest, ChangeRequest, SyncResponse

router = APIRouter(prefix=PREFIX, route_class=OrjsonRoute)


@router.get("/bundles", dependencies=READ_ONLY, responses=READ_ERRORS)
async def bundles(core: CoreDep, equipment_id: str | None = Query(default=None, max_length=MAX_NAME_CHARS),
                  power: str | None = Query(default=None, max_length=MAX_NAME_CHARS)) -> Response:
    """Every valid bundle (identity, modalities, features, thresholds, classifier, live flag)."""
    items = [b for b in core.describe()
             if (equipment_id is None or b["equipment_id"] == equipment_id)
             and (power is None or b["power"] == power)]
    history = [h for h in await core.management.live_history()
               if (equipment_id is None or h["equipment_id"] == equipment_id)
               and (power is None or h["power"] == power)]
    return json_response({"bundles": items, "history": history})

@router.get("/bundles/{equipment_id}/{power}/{version}/report", dependencies=READ_ONLY,
            responses=errors(401, 403, 404, 422, 413, 503, 504))
async def bundle_report(core: CoreDep, equipment_id: str, power: str, version: str) -> Response:
    """One version's report: what it serves, its provenance and held-out metrics, each
    gate's held-out error histogram against its threshold, and the RUL fit when it has one."""
    return json_response(await asyncio.to_thread(core.management.service.report, equipment_id, power, version))


@router.post("/sync", response_model=SyncResponse, dependencies=MANAGE, responses=MANAGE_ERRORS)
async def sync(core: CoreDep) -> Response:
    """Rescan the bundle root and report what changed."""
    return json_response(await core.management.sync())

@router.post("/bundles/upload", dependencies=MANAGE, responses=errors(400, 401, 403, 409, 415, 422, *EDGE),
          openapi_extra={"requestBody": {"required": True, "content": {
              "application/gzip": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_bundle(core: CoreDep, request: Request) -> Response:
    """Install a bundle from a ``.tar.gz`` of its files, then sync. 409 if that version exists."""
    data = await request.body()
    installed = await core.management.install(data)
    return json_response({"installed": installed, "sync": await core.management.sync()})

@router.post("/bundles/{equipment_id}/{power}/activate", dependencies=MANAGE, responses=MANAGE_ERRORS)
async def activate_version(core: CoreDep, equipment_id: str, power: str, body: ActivateRequest) -> Response:
    """Make ``model_version`` live (``pin``: keep it live even when newer versions appear)."""
    return json_response(await core.management.change_live("activate", equipment_id, power, version=body.model_version,
                                                pin=body.pin, reason=body.reason))

@router.post("/bundles/{equipment_id}/{power}/rollback", dependencies=MANAGE, responses=MANAGE_ERRORS)
async def rollback_version(core: CoreDep, equipment_id: str, power: str, body: ChangeRequest) -> Response:
    """Back to the version that was live before the current one (pinned)."""
    return json_response(await core.management.change_live("rollback", equipment_id, power, reason=body.reason))

@router.post("/bundles/{equipment_id}/{power}/unpin", dependencies=MANAGE, responses=MANAGE_ERRORS)
async def unpin_version(core: CoreDep, equipment_id: str, power: str, body: ChangeRequest) -> Response:
    """Drop the explicit live version: the newest valid one is live again."""
    return json_response(await core.management.change_live("unpin", equipment_id, power, reason=body.reason))
