"""Training a new version from stored readings, as a Ray task (admin): start a job,
follow it. The same build as ``serve-ml bundle train`` (``scoring.training``)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from serve_ml.core.errors import NotFound, ServeMLError, Unavailable
from serve_ml.deployments.api.body import OrjsonRoute
from serve_ml.deployments.api.deps import EDGE, MANAGE, Core, CoreDep, errors, json_response
from serve_ml.deployments.edge import PREFIX
from serve_ml.scoring.training import TrainRequest

router = APIRouter(prefix=PREFIX, route_class=OrjsonRoute)
TRAIN_ERRORS = errors(401, 403, 404, 422, *EDGE)


@router.post("/train", status_code=202, dependencies=MANAGE, responses=TRAIN_ERRORS)
async def start_training(core: CoreDep, req: TrainRequest) -> Response:
    """Build a new version of one power class's bundle from the readings stored for it
    in [start, end), as a Ray task; answers 202 with the job (follow it at
    ``GET /train/{job_id}``). The new version keeps the live bundle's shape and does
    not go live by itself: the live version is pinned first (when it is not already),
    and stays live until someone activates the new one."""
    if not core.history.database_url:
        raise Unavailable("training reads the stored readings: this server has no database (DATABASE_URL)")
    jobs = _jobs()
    from serve_ml.scoring.train_jobs import run_job

    kept = await _keep_live(core, req)
    job = await jobs.create.remote(req.model_dump(mode="json"), kept)
    run_job.remote(job["job_id"], req.model_dump_json(), core.history.database_url,
                   str(core.management.service.root), kept, jobs)
    return json_response(job, 202, headers={"Location": f"{PREFIX}/train/{job['job_id']}"})


@router.get("/train", dependencies=MANAGE, responses=errors(401, 403, *EDGE))
async def list_training() -> Response:
    """Every training job of this cluster, newest first (without their results)."""
    return json_response({"jobs": await _jobs().list.remote()})


@router.get("/train/{job_id}", dependencies=MANAGE, responses=errors(401, 403, 404, 422, *EDGE))
async def training_job(job_id: str) -> Response:
    """One job: its state (queued, running, succeeded, failed), its progress lines,
    and the new version's path and held-out figures once it succeeded."""
    job = await _jobs().get.remote(job_id)
    if job is None:
        raise NotFound(f"no training job {job_id!r}")
    return json_response(job)


def _jobs() -> Any:
    import ray

    if not ray.is_initialized():
        raise Unavailable("training runs as a Ray task: start serve-ml on Ray (`serve-ml up`, `serve run`)")
    from serve_ml.scoring.train_jobs import get_jobs

    return get_jobs()


async def _keep_live(core: Core, req: TrainRequest) -> str:
    live = [b for b in await asyncio.to_thread(core.describe)
            if b["equipment_id"] == req.equipment_id and b["power"] == req.power and b["live"]]
    if not live:
        raise NotFound(f"no live bundle for {req.equipment_id}/{req.power} to take the shape from")
    version = live[0]["model_version"]
    if live[0]["pinned"]:
        return f"{version} was already pinned: it stays live"
    try:
        await core.management.change_live("activate", req.equipment_id, req.power, version=version, pin=True,
                                          reason="kept live while a new version is trained (POST /train)")
    except ServeMLError as exc:
        raise Unavailable(f"could not pin the live version {version} before training: {exc.message}") from exc
    return f"pinned {version}, so the new version waits for an activation"
