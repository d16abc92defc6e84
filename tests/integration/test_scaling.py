"""Autoscaling: under sustained load an equipment deployment scales above its
minimum and returns to it when the load stops (short delays set for the test,
applied in place the way `serve-ml scale` does)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import ray
from ray import serve

from serve_ml.core.settings import Settings
from serve_ml.deployments.app import AppArgs, Autoscaling
from serve_ml.deployments.launch import apply_scaling
from serve_ml.scoring.control import get_control
from tests.fixtures import graph_quiet, replica_actors
from tests.samples import sim_rows

pytestmark = pytest.mark.integration
DEPLOYMENT = "equipment-pump-03"


def running_replicas() -> int:
    dep = serve.status().applications["serve-ml"].deployments[DEPLOYMENT]
    return dep.replica_states.get("RUNNING", 0)


def test_scale_up_under_load_and_back(cluster, http: httpx.Client) -> None:
    # Rebuild exactly the graph that runs (the recipe the launcher registered), once the
    # redeploy an earlier test's sync started has finished and its replicas have drained:
    # otherwise the "nothing restarted" check below would see that test's changes.
    graph_quiet()
    recipe = ray.get(get_control().recipe.remote())
    settings = Settings(**recipe["settings"])
    args = AppArgs.model_validate(recipe["app_args"])
    fast = Autoscaling(min_replicas=1, max_replicas=3, target_ongoing_requests=1, upscale_delay_s=1,
                       downscale_delay_s=3, metrics_interval_s=0.5, look_back_period_s=2)
    before = {a["name"] for a in replica_actors("serve-ml")}
    t0 = time.monotonic()
    apply_scaling(settings, args, "pump-03", fast)
    print(f"scaling applied in {time.monotonic() - t0:.1f}s")
    assert running_replicas() == 1
    # options only: applied to the running replicas, none restarted (stable code versions)
    assert {a["name"] for a in replica_actors("serve-ml")} == before
    body = {"readings": [{"equipment_id": "pump-03", "power": "5.5kW", "features": f}
                         for f in sim_rows("normal", 400, "5.5kW")]}
    stop, errors, peak = threading.Event(), [], [1]

    def load() -> None:
        with httpx.Client(base_url=str(http.base_url), timeout=60) as c:
            while not stop.is_set():
                r = c.post("/predict/bulk", json=body)
                if r.status_code != 200:
                    errors.append(r.status_code)

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and peak[0] < 2:
            peak[0] = max(peak[0], running_replicas())
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert peak[0] >= 2, "never scaled above min_replicas under load"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and running_replicas() > 1:
        time.sleep(1)
    assert running_replicas() == 1, "did not return to min_replicas after the load stopped"
    assert not errors, errors[:5]
