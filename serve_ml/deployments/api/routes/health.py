"""Liveness, readiness and stream health (answers cached for a second: health checks
ask the whole cluster, and anonymous callers must not multiply that)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from serve_ml.core.errors import Unavailable
from serve_ml.deployments.api.body import OrjsonRoute
from serve_ml.deployments.api.deps import READ_ONLY, CoreDep, errors, json_response
from serve_ml.deployments.edge import PREFIX

router = APIRouter(prefix=PREFIX, route_class=OrjsonRoute)


@router.get("/health/live")
async def live() -> Response:
    """The process answers."""
    return json_response({"status": "ok"})


@router.get("/health/ready", responses=errors(503))
async def ready(request: Request) -> Response:
    """Bundles are loaded and every equipment deployment answers (cached for a second)."""
    ok, detail = await request.app.state.ready_answer()
    return json_response({"status": "ready" if ok else "not ready", **detail}, 200 if ok else 503)


@router.get("/deployments", dependencies=READ_ONLY, responses=errors(401, 403, 413, 503, 504))
async def deployments(request: Request) -> Response:
    """The serving app's status and each deployment's replicas by state (RUNNING,
    STARTING, STOPPING...), as Serve's controller reports them (cached for a second)."""
    return json_response(await request.app.state.deployments_answer())


@router.get("/stream/dead-letters", dependencies=READ_ONLY, responses=errors(401, 403, 413, 422, 503, 504))
async def dead_letters(core: CoreDep, limit: int = Query(default=50, ge=1, le=1000)) -> Response:
    """The newest records the stream refused, newest first: why (``reason``), where from
    (source topic, partition, offset in ``headers``), and a prefix of the bytes."""
    if core.dead_letters is None:
        raise Unavailable("no stream broker configured (KAFKA_BOOTSTRAP, or `serve-ml up`)")
    return json_response({"dead_letters": await core.dead_letters.newest(limit)})


@router.get("/stream/health", responses=errors(503))
async def stream_health(request: Request) -> Response:
    """State and lag of the stream scorer actors; 503 unless all are running (cached for a second)."""
    health = await request.app.state.stream_answer()
    states = {h.get("state") for h in health.values()}
    status = ("ok" if health and states == {"running"} else
              "starting" if health and states <= {"running", "starting"} else "degraded")
    return json_response({"status": status, "actors": health}, 200 if status == "ok" else 503)
