"""POST /train: a new version trained from the readings the stream stored, as a Ray
task on the shared cluster, followed at GET /train/{job_id}; it does not go live;
a job with too few stored readings fails with the reason; the viewer is refused.

The API is served in this process (the shared cluster's ingress has no database),
on the cluster's Ray, over the stack's real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serve_ml.bundles.batch import Reading
from serve_ml.bundles.builder import BuildSpec, build_bundle
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.thresholds import QuantileFactor
from serve_ml.deployments.api import create_api
from serve_ml.deployments.auth import TokenGuard
from serve_ml.deployments.local import LocalCore
from serve_ml.pipelines.encode import Origin, encode_scored
from serve_ml.pipelines.stack import Stack
from serve_ml.scoring.metrics import NoMetrics
from serve_ml.scoring.service import ScoringService
from tests.conftest import MODS
from tests.samples import sim_rows
from tests.streamkit import now, write_rows

pytestmark = pytest.mark.integration
API = "/api/v1/serve-ml"
ADMIN = {"Authorization": "Bearer train-admin-token-01"}
VIEWER = {"Authorization": "Bearer train-read-token-001"}
EQ = "train-api-01"


@pytest.fixture(scope="module")
def api(cluster, stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path, dt.datetime]]:
    """The API on a private root holding a bundle of this module's own equipment, and
    600 of its readings stored from ``base`` on: no other test touches either."""
    root = tmp_path_factory.mktemp("train") / "root"
    history = [r for s in range(12) for r in sim_rows("normal", 50, seed=300 + s)]
    spec = BuildSpec(equipment_id=EQ, power="7.5kW", model_version="1.0.0", power_range_kw=(0.0, 100.0),
                     modalities=MODS, classifier=False, epochs=3,
                     threshold_rule=QuantileFactor(q=0.99, factor=100.0))  # a gate that never fires: no alerts
    build_bundle(spec, {f: np.array([r[f] for r in history]) for f in history[0]}, np.full(len(history), "none"),
                 root, data="sim", progress=lambda _m: None)
    rows = [r for s in range(12) for r in sim_rows("normal", 50, seed=400 + s)]
    base = now() + dt.timedelta(hours=10)  # a stretch of time no other test stores in
    encoded, rejected = encode_scored(Catalog.scan(root), [Reading(EQ, r, "7.5kW") for r in rows],
                                      [Origin(base + dt.timedelta(seconds=k), r, "kafka", 0, k)
                                       for k, r in enumerate(rows)], enable_xgb=False)
    assert not rejected
    assert not write_rows(stack, encoded, resolve_after=10).alerts_opened
    core = LocalCore(ScoringService(root, enable_xgb=False, metrics=NoMetrics()), max_bulk_rows=1000,
                     database_url=stack.database_url, guard=TokenGuard("train-admin-token-01", "train-read-token-001"))
    # one event loop for every request: the database pool belongs to the loop that made it
    with TestClient(create_api(core, max_request_bytes=1 << 20)) as client:
        yield client, root, base


def _finished(c: TestClient, job_id: str, timeout_s: float = 180) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = c.get(f"{API}/train/{job_id}", headers=ADMIN).json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout_s}s: {job['progress'][-3:]}")


def test_a_version_trained_from_stored_readings_waits_for_an_activation(api) -> None:
    c, root, base = api
    body = {"equipment_id": EQ, "power": "7.5kW", "start": base.isoformat(),
            "end": (base + dt.timedelta(hours=1)).isoformat(), "epochs": 2}
    assert c.post(f"{API}/train", json=body, headers=VIEWER).status_code == 403
    [live] = [b for b in c.get(f"{API}/bundles", params={"equipment_id": EQ}, headers=VIEWER).json()["bundles"]
              if b["live"]]  # pinned already if another test of this module started a job first
    started = c.post(f"{API}/train", json=body, headers=ADMIN)
    assert started.status_code == 202, started.text
    job = started.json()
    assert started.headers["location"] == f"{API}/train/{job['job_id']}"
    assert job["state"] == "queued" and job["kept_live"] == (
        "1.0.0 was already pinned: it stays live" if live["pinned"] else
        "pinned 1.0.0, so the new version waits for an activation")

    done = _finished(c, job["job_id"])
    assert done["state"] == "succeeded", (done["error"], done["progress"][-5:])
    result = done["result"]
    assert result["model_version"] == "1.1.0" and result["rows"] == 600 and result["live"] is False
    assert any(f"training {EQ}/7.5kW/1.1.0 on 600 readings (600 normal)" in line for line in done["progress"])
    assert (root / EQ / "7.5kW" / "1.1.0" / "manifest.json").is_file()
    c.post(f"{API}/sync", headers=ADMIN)
    listed = {b["model_version"]: (b["live"], b["pinned"]) for b in c.get(
        f"{API}/bundles", params={"equipment_id": EQ, "power": "7.5kW"}, headers=VIEWER).json()["bundles"]}
    assert listed == {"1.0.0": (True, True), "1.1.0": (False, False)}
    assert job["job_id"] in [j["job_id"] for j in c.get(f"{API}/train", headers=ADMIN).json()["jobs"]]


def test_a_job_without_enough_stored_readings_fails_with_the_reason(api) -> None:
    c, _, _ = api
    body = {"equipment_id": EQ, "power": "7.5kW", "start": "2001-01-01T00:00:00Z",
            "end": "2001-01-02T00:00:00Z", "epochs": 1}
    job = c.post(f"{API}/train", json=body, headers=ADMIN).json()
    done = _finished(c, job["job_id"], 60)
    assert done["state"] == "failed" and "0 normal readings stored" in done["error"]
    assert "at least 200 are needed" in done["error"] and done["result"] is None


def test_bad_requests_are_refused_before_any_job(api) -> None:
    c, _, _ = api
    unknown = c.post(f"{API}/train", headers=ADMIN, json={"equipment_id": "nope-01", "power": "7.5kW",
                                                          "start": "2026-01-01T00:00:00Z",
                                                          "end": "2026-01-02T00:00:00Z"})
    assert unknown.status_code == 404 and "no live bundle for nope-01/7.5kW" in unknown.text
    backwards = c.post(f"{API}/train", headers=ADMIN, json={"equipment_id": EQ, "power": "7.5kW",
                                                            "start": "2026-01-02T00:00:00Z",
                                                            "end": "2026-01-01T00:00:00Z"})
    assert backwards.status_code == 422 and "start must be before end" in backwards.text
    assert c.get(f"{API}/train/feedfeedfeed", headers=ADMIN).status_code == 404
