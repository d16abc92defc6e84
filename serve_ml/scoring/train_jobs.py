"""Training from stored data as Ray tasks (``POST /train``): each job is a Ray task
running :func:`serve_ml.scoring.training.train_from_store`, and a named actor keeps
every job's state and progress lines, so any ingress replica can answer
``GET /train/{job_id}`` whichever replica started it.

A job's states: ``queued`` (submitted, waiting for a CPU), ``running``,
``succeeded`` (with the new version, its path and held-out figures) or ``failed``
(with the reason). Jobs live as long as the cluster; the bundle a job wrote stays
in the bundle root, not live until activated.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson
import ray

from serve_ml.core.errors import ServeMLError
from serve_ml.scoring.control import CONTROL_NAMESPACE
from serve_ml.scoring.training import TrainRequest, train_from_store

JOBS_NAME = "serve-ml-train-jobs"
MAX_PROGRESS_LINES = 200
MAX_JOBS = 500  # the oldest finished jobs are forgotten past this many
TRAIN_CPUS = 0.5  # a fraction, so a job is placed on a cluster whose replicas hold whole CPUs


@ray.remote(num_cpus=0)
class TrainJobs:
    """Every training job's state, by id."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.progress: dict[str, deque[str]] = {}

    def create(self, request: dict[str, Any], kept_live: str) -> dict[str, Any]:
        job_id = secrets.token_hex(6)
        self.jobs[job_id] = {"job_id": job_id, "state": "queued", "request": request, "kept_live": kept_live,
                             "submitted_at": time.time(), "started_at": None, "finished_at": None,
                             "result": None, "error": None}
        self.progress[job_id] = deque(maxlen=MAX_PROGRESS_LINES)
        self._forget_old()
        return self.get(job_id)  # type: ignore[return-value]

    def update(self, job_id: str, **fields: Any) -> None:
        self.jobs[job_id].update(fields)

    def note(self, job_id: str, line: str) -> None:
        self.progress[job_id].append(line)

    def get(self, job_id: str) -> dict[str, Any] | None:
        job = self.jobs.get(job_id)
        return None if job is None else {**job, "progress": list(self.progress[job_id])}

    def list(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in j.items() if k != "result"} for j in sorted(
            self.jobs.values(), key=lambda j: j["submitted_at"], reverse=True)]

    def _forget_old(self) -> None:
        done = [j for j in sorted(self.jobs.values(), key=lambda j: j["submitted_at"])
                if j["state"] in ("succeeded", "failed")]
        for j in done[: max(0, len(self.jobs) - MAX_JOBS)]:
            del self.jobs[j["job_id"]], self.progress[j["job_id"]]


def get_jobs() -> Any:
    """The job registry actor, created on first use (idempotent across replicas)."""
    return TrainJobs.options(  # type: ignore[attr-defined]
        name=JOBS_NAME, namespace=CONTROL_NAMESPACE, get_if_exists=True, lifetime="detached").remote()


@ray.remote(num_cpus=TRAIN_CPUS, max_retries=0)
def run_job(job_id: str, request_json: str, database_url: str, root: str, kept_live: str, jobs: Any) -> None:
    """The Ray task: train, and record every step and the outcome in ``jobs``."""
    jobs.update.remote(job_id, state="running", started_at=time.time())
    try:
        result = train_from_store(TrainRequest.model_validate_json(request_json), database_url, Path(root),
                                  lambda line: jobs.note.remote(job_id, line), lambda _live: kept_live)
        # numpy figures and paths as plain JSON values
        plain = orjson.loads(orjson.dumps(result, default=str, option=orjson.OPT_SERIALIZE_NUMPY))
        jobs.update.remote(job_id, state="succeeded", result=plain, finished_at=time.time())
    except ServeMLError as exc:
        jobs.update.remote(job_id, state="failed", error=exc.message, finished_at=time.time())
    except Exception as exc:  # a job's failure is its outcome, not the task's
        jobs.update.remote(job_id, state="failed", error=f"{type(exc).__name__}: {exc}", finished_at=time.time())
