"""Open Inference Protocol v2 on the in-process API: request bodies made by
``tritonclient.http`` itself (JSON and binary tensors), answers read back by it, and
the same numbers as serve-ml's own columnar route."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient

from serve_ml.deployments.api import create_api
from serve_ml.deployments.auth import TokenGuard
from serve_ml.deployments.local import LocalCore
from serve_ml.scoring.metrics import NoMetrics
from serve_ml.scoring.service import ScoringService
from tests.samples import sim_rows

API = "/api/v1/serve-ml"
READ_TOKEN = "r" * 24


def _client(root: Path, *, xgb: bool = True, guard: TokenGuard | None = None) -> TestClient:
    core = LocalCore(ScoringService(root, enable_xgb=xgb, metrics=NoMetrics()), max_bulk_rows=5000, guard=guard)
    return TestClient(create_api(core, max_request_bytes=8 << 20))


def _rows(n: int, power: str = "7.5kW") -> dict[str, np.ndarray]:
    rows = sim_rows("normal", n, power) + sim_rows("overstrain", n, power)
    return {f: np.asarray([r[f] for r in rows]) for f in rows[0]}


def _post(c: TestClient, path: str, inputs: list, outputs: list | None = None, **params: object) -> triton.InferResult:
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs=outputs, parameters=params
                                                                         or None)
    headers = {} if json_size is None else {"Inference-Header-Content-Length": str(json_size),
                                            "Content-Type": "application/octet-stream"}
    r = c.post(path, content=body, headers=headers)
    assert r.status_code == 200, r.text
    length = r.headers.get("Inference-Header-Content-Length")
    return triton.InferResult.from_response_body(r.content, header_length=None if length is None else int(length))


def _inputs(cols: dict[str, np.ndarray], binary: bool, dtype: str = "FP64") -> list[triton.InferInput]:
    out = []
    for name, values in cols.items():
        t = triton.InferInput(name, [len(values)], dtype)
        t.set_data_from_numpy(values.astype(np.float32 if dtype == "FP32" else np.float64), binary_data=binary)
        out.append(t)
    return out


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_per_feature_tensors_score_as_the_columns_route_does(demo_root: Path, binary: bool) -> None:
    c = _client(demo_root)
    cols = _rows(20)
    outputs = None if not binary else [triton.InferRequestedOutput(n, binary_data=True) for n in (
        "anomaly", "score", "error_thermal", "fault_label", "fault_probabilities")]
    res = _post(c, "/v2/models/press-02/infer", _inputs(cols, binary), outputs)
    own = c.post(f"{API}/predict/columns", json={"equipment_id": "press-02",
                                                 "columns": {k: v.tolist() for k, v in cols.items()}}).json()
    np.testing.assert_allclose(res.as_numpy("score"), own["score"])
    assert res.as_numpy("anomaly").tolist() == own["anomaly"]
    np.testing.assert_allclose(res.as_numpy("error_thermal"), own["modalities"]["thermal"]["error"])
    labels = [v.decode() if isinstance(v, bytes) else v for v in res.as_numpy("fault_label").tolist()]
    # press-02 cascades: a row the gate passed has no label ('' in a BYTES tensor,
    # null in JSON) and no probabilities (NaN, null).
    assert labels == [label or "" for label in own["classifier"]["label"]]
    probs = res.as_numpy("fault_probabilities")
    assert probs.shape == (40, len(own["classifier"]["classes"]))
    np.testing.assert_allclose(probs, np.array(own["classifier"]["probabilities"], dtype=float))  # null -> NaN
    assert "" in labels[:20] and np.isnan(probs[:20]).any(), "no normal row passed the gate"
    assert res.get_response()["model_name"] == "press-02"
    assert res.get_response()["model_version"] == own["model_version"]
    assert any(labels[20:]), "the overstrained rows were never classified as a fault"


def test_one_matrix_tensor_with_the_feature_order_in_its_parameters(demo_root: Path) -> None:
    c = _client(demo_root)
    cols = _rows(10, "5.5kW")
    names = list(reversed(cols))  # not the model's order: the parameter says which
    matrix = np.stack([cols[n] for n in names], axis=1).astype("<f4")
    head = orjson.dumps({"inputs": [{"name": "readings", "datatype": "FP32", "shape": list(matrix.shape),
                                     "parameters": {"features": ",".join(names), "binary_data_size": matrix.nbytes}}],
                         "parameters": {"power": "5.5kW"}})
    r = c.post("/v2/models/pump-03/infer", content=head + matrix.tobytes(),
               headers={"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    own = c.post(f"{API}/predict/columns", json={"equipment_id": "pump-03", "power": "5.5kW", "columns": {
        k: v.astype(np.float32).astype(np.float64).tolist() for k, v in cols.items()}}).json()
    np.testing.assert_allclose(r.json()["outputs"][1]["data"], own["score"])
    assert r.json()["parameters"]["power"] == "5.5kW"


def test_a_matrix_without_feature_names_is_read_in_the_metadata_order(demo_root: Path) -> None:
    """What tritonclient users send: it cannot set an input's parameters."""
    c = _client(demo_root)
    order = [i["name"] for i in c.get("/v2/models/pump-03").json()["inputs"]]
    cols = _rows(5, "5.5kW")
    t = triton.InferInput("INPUT0", [10, len(order)], "FP64")
    t.set_data_from_numpy(np.stack([cols[n] for n in order], axis=1), binary_data=True)
    res = _post(c, "/v2/models/pump-03/infer", [t], power="5.5kW")
    own = c.post(f"{API}/predict/columns", json={"equipment_id": "pump-03", "power": "5.5kW", "columns": {
        k: v.tolist() for k, v in cols.items()}}).json()
    np.testing.assert_allclose(res.as_numpy("score"), own["score"])


def test_a_version_route_scores_with_that_version_and_metadata_names_inputs(demo_root: Path) -> None:
    c = _client(demo_root)
    meta = c.get("/v2/models/press-02").json()
    assert meta["name"] == "press-02" and meta["versions"] == ["1.0.0"]
    assert {"air_temp_k", "torque_nm", "speed_rpm"} <= {i["name"] for i in meta["inputs"]}
    assert {"anomaly", "score", "fault_label", "fault_probabilities"} <= {o["name"] for o in meta["outputs"]}
    assert c.get("/v2/models/press-02/versions/1.0.0").status_code == 200
    assert c.get("/v2/models/press-02/ready").json()["ready"] is True
    cols = _rows(3)
    res = _post(c, "/v2/models/press-02/versions/1.0.0/infer", _inputs(cols, False))
    assert res.get_response()["model_version"] == "1.0.0"
    missing = c.get("/v2/models/press-02/versions/9.9.9")
    assert missing.status_code == 404 and "9.9.9" in missing.json()["error"]


def test_server_routes_and_health(demo_root: Path) -> None:
    c = _client(demo_root)
    assert c.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    assert c.get("/v2/health/live").status_code == 200
    assert c.get("/v2/health/ready").json() == {"ready": True}


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"inputs": []}, 400, "non-empty list"),
    ({"inputs": [{"name": "air_temp_k", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}, 422, "not numeric"),
    ({"inputs": [{"name": "air_temp_k", "datatype": "FP64", "shape": [2], "data": [1.0]}]}, 400, "needs 2 values"),
    ({"inputs": [{"name": "air_temp_k", "datatype": "FP64", "shape": [1], "data": [300.0]},
                 {"name": "torque_nm", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]}]}, 422, "differ in rows"),
    ({"inputs": [{"name": "m", "datatype": "FP64", "shape": [1, 2], "data": [1.0, 2.0],
                  "parameters": {"features": "a,b,c"}}]}, 400, "3 features named"),
    ({"inputs": [{"name": "nope", "datatype": "FP64", "shape": [1], "data": [1.0]}],
      "parameters": {"power": "7.5kW"}}, 422, "nope"),
])
def test_bad_requests_are_refused_in_the_protocols_error_shape(demo_root: Path, body: dict, status: int,
                                                               says: str) -> None:
    r = _client(demo_root).post("/v2/models/press-02/infer", json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["error"], r.json()


def test_unknown_model_and_unknown_output_name_the_problem(demo_root: Path) -> None:
    c = _client(demo_root)
    r = c.post("/v2/models/ghost-01/infer", json={"inputs": [{"name": "a", "datatype": "FP64", "shape": [1],
                                                              "data": [1.0]}]})
    assert r.status_code == 404 and "ghost-01" in r.json()["error"]
    cols = _rows(1)
    body = {"inputs": [{"name": k, "datatype": "FP64", "shape": [2], "data": v.tolist()} for k, v in cols.items()],
            "outputs": [{"name": "confidence"}]}
    r = c.post("/v2/models/press-02/infer", json=body)
    assert r.status_code == 400 and "'confidence'" in r.json()["error"]


def test_infer_needs_the_read_token_and_health_does_not(demo_root: Path) -> None:
    c = _client(demo_root, guard=TokenGuard("a" * 24, READ_TOKEN))
    assert c.get("/v2/health/live").status_code == 200
    r = c.get("/v2/models/press-02")
    assert r.status_code == 401 and isinstance(r.json()["error"], str) and r.json()["code"] == "Unauthenticated"
    assert c.get("/v2/models/press-02", headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code == 200


def test_rows_that_cannot_be_scored_are_nan_and_listed(demo_root: Path) -> None:
    c = _client(demo_root)
    cols = _rows(2)
    cols["air_temp_k"][1] = np.inf
    res = _post(c, "/v2/models/press-02/infer", _inputs(cols, True),
                [triton.InferRequestedOutput("score", binary_data=True)])
    score = res.as_numpy("score")
    assert np.isnan(score[1]) and not np.isnan(score[0])
    assert '"1"' in res.get_response()["parameters"]["row_errors"]


def test_a_sequence_bundle_takes_windows_per_feature_or_as_one_tensor(tmp_path: Path) -> None:
    from serve_ml.bundles.simulation import MachineSpec, simulate
    from tests.conftest import build_seq_bundle

    steps = 6
    build_seq_bundle(tmp_path, "seq-v2", "7.5kW", "1.0.0", steps=steps)
    c = _client(tmp_path, xgb=False)
    meta = c.get("/v2/models/seq-v2").json()
    assert {tuple(i["shape"]) for i in meta["inputs"]} == {(-1, steps)}
    names = [i["name"] for i in meta["inputs"]]
    cols = simulate(30, spec=MachineSpec.for_power("7.5kW"), rng=np.random.default_rng(2))
    wins = {f: np.lib.stride_tricks.sliding_window_view(cols[f], steps)[:10] for f in names}
    own = c.post(f"{API}/predict/columns", json={"equipment_id": "seq-v2", "power": "7.5kW",
                                                 "columns": {f: w.tolist() for f, w in wins.items()}}).json()
    per_feature = []
    for f in names:
        t = triton.InferInput(f, [10, steps], "FP64")
        t.set_data_from_numpy(np.ascontiguousarray(wins[f]), binary_data=True)
        per_feature.append(t)
    res = _post(c, "/v2/models/seq-v2/infer", per_feature, power="7.5kW")
    np.testing.assert_allclose(res.as_numpy("score"), own["score"])
    cube = triton.InferInput("windows", [10, steps, len(names)], "FP64")
    cube.set_data_from_numpy(np.stack([wins[f] for f in names], axis=-1), binary_data=False)
    res = _post(c, "/v2/models/seq-v2/infer", [cube], power="7.5kW")
    np.testing.assert_allclose(res.as_numpy("score"), own["score"])
