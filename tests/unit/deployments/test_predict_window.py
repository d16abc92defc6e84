"""POST /predict with a window (``readings``, oldest first): one verdict for the last
reading, the same as the columnar route gives for that window; too short a window, a
window with mixed names and both forms at once are refused, naming the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serve_ml.bundles.simulation import MachineSpec, simulate
from serve_ml.core.settings import Settings
from serve_ml.deployments.local import create_local_app
from tests.conftest import build_seq_bundle

API = "/api/v1/serve-ml"
STEPS = 6
EQ = "seq-row-01"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    root = tmp_path_factory.mktemp("seqrow")
    build_seq_bundle(root, EQ, "7.5kW", "1.0.0", steps=STEPS)
    return TestClient(create_local_app(Settings(root=root)))


@pytest.fixture(scope="module")
def series() -> dict[str, np.ndarray]:
    cols = simulate(20, spec=MachineSpec.for_power("7.5kW"), rng=np.random.default_rng(4))
    return {f: cols[f] for f in ("air_temp_k", "process_temp_k", "vibration_rms_mm_s", "current_a")}


def rows(series: dict[str, np.ndarray], start: int, n: int) -> list[dict[str, float]]:
    return [{f: float(c[i]) for f, c in series.items()} for i in range(start, start + n)]


@pytest.mark.parametrize("extra", [0, 3])  # exactly window_steps readings, or more (the last ones are read)
def test_a_window_answers_the_last_readings_verdict_as_the_columns_route_does(
        client: TestClient, series: dict[str, np.ndarray], extra: int) -> None:
    window = rows(series, 5, STEPS + extra)
    r = client.post(f"{API}/predict", json={"equipment_id": EQ, "power": "7.5kW", "readings": window})
    assert r.status_code == 200, r.text
    one = r.json()
    cols = client.post(f"{API}/predict/columns", json={"equipment_id": EQ, "power": "7.5kW", "columns": {
        f: [[row[f] for row in window[-STEPS:]]] for f in series}}).json()
    assert one["score"] == pytest.approx(cols["score"][0])
    assert one["modalities"]["motor"]["status"] == "scored"
    assert one["modalities"]["motor"]["error"] == pytest.approx(cols["modalities"]["motor"]["error"][0])
    # the dense modality reads the last reading: as if it had been sent alone
    alone = client.post(f"{API}/predict", json={"equipment_id": EQ, "power": "7.5kW", "features": window[-1]})
    assert alone.status_code == 422 and "needs a window of 6" in alone.text  # (alone, the LSTM cannot score)
    assert one["modalities"]["thermal"]["error"] == pytest.approx(cols["modalities"]["thermal"]["error"][0])


def test_consecutive_windows_follow_the_series(client: TestClient, series: dict[str, np.ndarray]) -> None:
    errors = [client.post(f"{API}/predict", json={"equipment_id": EQ, "power": "7.5kW",
                                                   "readings": rows(series, s, STEPS)}).json()["modalities"]["motor"]
              ["error"] for s in range(4)]
    cols = client.post(f"{API}/predict/columns", json={"equipment_id": EQ, "power": "7.5kW", "columns": {
        f: np.lib.stride_tricks.sliding_window_view(c[:STEPS + 3], STEPS).tolist() for f, c in series.items()}}).json()
    assert errors == pytest.approx(cols["modalities"]["motor"]["error"])


@pytest.mark.parametrize(("body", "says"), [
    ({"readings": "short"}, "needs a window of 6 consecutive readings"),
    ({"readings": "mixed"}, "every reading of a window needs the same names"),
    ({"readings": "both"}, "either features (one reading) or readings"),
    ({"readings": []}, "at least 1 item"),
])
def test_bad_windows_are_refused_naming_the_problem(client: TestClient, series: dict[str, np.ndarray],
                                                    body: dict, says: str) -> None:
    window = rows(series, 0, STEPS)
    kind = body["readings"]
    if kind == "short":
        body = {"readings": window[:3]}
    elif kind == "mixed":
        body = {"readings": [*window[:-1], {k: v for k, v in window[-1].items() if k != "current_a"}]}
    elif kind == "both":
        body = {"readings": window, "features": window[-1]}
    r = client.post(f"{API}/predict", json={"equipment_id": EQ, "power": "7.5kW", **body})
    assert r.status_code == 422 and says in r.text, r.text
    if kind == "short":
        assert "got 3" in r.text


def test_a_dense_bundle_scores_a_windows_last_reading(demo_root: Path) -> None:
    c = TestClient(create_local_app(Settings(root=demo_root)))
    rows_ = [{"air_temp_k": 300.0 + i, "process_temp_k": 310.0 + i} for i in range(3)]
    windowed = c.post(f"{API}/predict", json={"equipment_id": "pump-03", "power": "7.5kW", "readings": rows_}).json()
    alone = c.post(f"{API}/predict", json={"equipment_id": "pump-03", "power": "7.5kW", "features": rows_[-1]}).json()
    assert windowed["score"] == pytest.approx(alone["score"])
    assert windowed["modalities"] == alone["modalities"]


def test_bulk_scores_windows_and_readings_together_in_order(client: TestClient, series: dict[str, np.ndarray]) -> None:
    def one(window: list[dict[str, float]]) -> float:
        return client.post(f"{API}/predict", json={"equipment_id": EQ, "power": "7.5kW",
                                                   "readings": window}).json()["score"]

    w1, w2 = rows(series, 0, STEPS), rows(series, 3, STEPS + 3)  # windows of different lengths
    items = [{"equipment_id": EQ, "power": "7.5kW", "readings": w1},
             {"equipment_id": EQ, "power": "7.5kW", "features": w1[-1]},  # one reading: the LSTM cannot score it
             {"equipment_id": EQ, "power": "7.5kW", "readings": w2},
             {"equipment_id": "nope-01", "features": w1[0]}]
    r = client.post(f"{API}/predict/bulk", json={"readings": items})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert res[0]["score"] == pytest.approx(one(w1)) and res[2]["score"] == pytest.approx(one(w2))
    assert res[0]["modalities"]["motor"]["status"] == "scored"
    assert "needs a window of 6" in res[1]["error"]["message"] and "nope-01" in res[3]["error"]["message"]
    assert r.json()["errors"] == 2


@pytest.mark.parametrize(("item", "says"), [
    ({"features": {"air_temp_k": 1.0}, "readings": [{"air_temp_k": 1.0}]}, "readings[0]: give either features"),
    ({"readings": [{"air_temp_k": 1.0}, {"current_a": 1.0}]}, "readings[0]: every reading of a window needs"),
    ({}, "readings[0].features: expected a non-empty object of name -> number"),
    ({"readings": [{"air_temp_k": "hot"}]}, "readings[0].readings.0.air_temp_k: Input should be a valid number"),
])
def test_bulk_refuses_a_malformed_window_naming_it(client: TestClient, item: dict, says: str) -> None:
    r = client.post(f"{API}/predict/bulk", json={"readings": [{"equipment_id": EQ, **item}]})
    assert r.status_code == 422 and says in r.text, r.text
