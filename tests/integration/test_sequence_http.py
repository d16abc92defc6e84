"""A sequence bundle on the running cluster: added by a sync, scored on windows sent
as JSON columns, as binary columns with ``steps`` and as one window of rows on
``/predict``, refused with the number of steps it needs, then removed again."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np
import pytest

from serve_ml.bundles.simulation import MachineSpec, simulate
from tests.conftest import build_seq_bundle
from tests.fixtures import graph_settled
from tests.integration.conftest import ADMIN

pytestmark = pytest.mark.integration
STEPS = 6
FEATURES = ("air_temp_k", "process_temp_k", "vibration_rms_mm_s", "current_a")


def test_windows_are_scored_through_serve_in_json_and_binary(cluster, http: httpx.Client, serve_root: Path) -> None:
    eq = "seq-http-01"
    build_seq_bundle(serve_root, eq, "7.5kW", "1.0.0", steps=STEPS)
    try:
        assert http.post("/sync", headers=ADMIN).json()["added"] == [f"{eq}/7.5kW/1.0.0"]
        cols = simulate(40, spec=MachineSpec.for_power("7.5kW"), rng=np.random.default_rng(3))
        wins = {f: np.lib.stride_tricks.sliding_window_view(cols[f], STEPS)[:20] for f in FEATURES}
        as_json = http.post("/predict/columns", json={"equipment_id": eq, "power": "7.5kW",
                                                      "columns": {f: w.tolist() for f, w in wins.items()}})
        assert as_json.status_code == 200, as_json.text
        body = as_json.json()
        assert body["rows"] == 20 and body["modalities"]["motor"]["threshold"] > 0
        query = urlencode({"equipment_id": eq, "power": "7.5kW", "features": ",".join(FEATURES), "steps": STEPS})
        as_binary = http.post(f"/predict/columns/binary?{query}", content=np.stack([wins[f] for f in FEATURES])
                              .astype("<f8").tobytes(), headers={"Content-Type": "application/octet-stream"})
        assert as_binary.status_code == 200, as_binary.text
        assert as_binary.json()["score"] == pytest.approx(body["score"])
        # one window as rows on /predict: the verdict of its last reading
        rows = [{f: float(cols[f][i]) for f in FEATURES} for i in range(2, 2 + STEPS)]
        one = http.post("/predict", json={"equipment_id": eq, "power": "7.5kW", "readings": rows})
        assert one.status_code == 200, one.text
        assert one.json()["score"] == pytest.approx(body["score"][2])
        assert one.json()["modalities"]["motor"]["status"] == "scored"
        # windows in a bulk request, across the hop to the equipment's replica
        bulk = http.post("/predict/bulk", json={"readings": [
            {"equipment_id": eq, "power": "7.5kW", "readings": rows},
            {"equipment_id": eq, "power": "7.5kW", "features": rows[-1]}]})
        assert bulk.status_code == 200, bulk.text
        assert bulk.json()["results"][0]["score"] == pytest.approx(body["score"][2])
        assert "needs a window" in bulk.json()["results"][1]["error"]["message"]
        short = http.post("/predict/columns", json={"equipment_id": eq, "power": "7.5kW",
                                                    "columns": {f: w[:, -3:].tolist() for f, w in wins.items()}})
        assert short.status_code == 422 and f"needs a window of {STEPS} consecutive readings" in short.text
        assert "got 3" in short.text
    finally:
        shutil.rmtree(serve_root / eq)
        assert http.post("/sync", headers=ADMIN).json()["removed"] == [f"{eq}/7.5kW/1.0.0"]
        graph_settled()
