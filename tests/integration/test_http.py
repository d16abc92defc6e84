"""Every endpoint over real HTTP through Ray Serve (HAProxy ingress), with each error case."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.samples import sim_rows

pytestmark = pytest.mark.integration


def test_predict_each_equipment_with_automatic_power(http: httpx.Client) -> None:
    for eq in ("press-02", "pump-03"):
        for power in ("5.5kW", "7.5kW"):
            r = http.post("/predict", json={"equipment_id": eq, "features": sim_rows("normal", 1, power)[0]})
            assert r.status_code == 200, r.text
            assert r.json()["power"] == power and r.json()["anomaly"] is False


def test_predict_flags_a_fault(http: httpx.Client) -> None:
    r = http.post("/predict", json={"equipment_id": "press-02", "features": sim_rows("power_failure", 1)[0]})
    assert r.status_code == 200 and r.json()["anomaly"] is True
    assert r.json()["modalities"]["mechanical"]["anomaly"] is True


@pytest.mark.parametrize("body, status, needle", [
    ({"equipment_id": "ghost", "features": {"air_temp_k": 1.0}}, 404, "unknown equipment_id 'ghost'"),
    ({"equipment_id": "press-02", "power": "1kW", "features": {"air_temp_k": 1.0}}, 404, "no power class '1kW'"),
    ({"equipment_id": "press-02", "power": "7.5kW", "model_version": "0.1", "features": {"air_temp_k": 1.0}},
     404, "no model_version '0.1'"),
    ({"equipment_id": "press-02", "power": "7.5kW", "features": {"air_temp_k": 300.0}}, 422, "process_temp_k"),
    ({"equipment_id": "press-02", "features": {"air_temp_k": "x"}}, 422, "features.air_temp_k"),
    ({"equipment_id": "press-02", "features": {"air_temp_k": 300.0, "process_temp_k": 310.0}}, 400, "candidates"),
])
def test_predict_errors(http: httpx.Client, body: dict, status: int, needle: str) -> None:
    r = http.post("/predict", json=body)
    assert r.status_code == status and needle in r.json()["message"], r.text


def test_malformed_json_and_oversized_body(http: httpx.Client) -> None:
    r = http.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "InvalidRequest"
    r = http.post("/predict", content=b" " * (5 * 1024 * 1024), headers={"content-type": "application/json"})
    assert r.status_code == 413


def _strip(item: dict) -> dict:
    return {k: v for k, v in item.items() if k != "latency_ms"}


def test_fast_path_and_deployment_path_identical(http: httpx.Client) -> None:
    """Single rows are scored in the ingress; bulk goes through the equipment
    deployment. The same one-row batch must give bit-identical answers both ways."""
    for f in sim_rows("normal", 5) + sim_rows("tool_wear", 5):
        reading = {"equipment_id": "press-02", "features": f}
        single = http.post("/predict", json=reading).json()
        via_deployment = http.post("/predict/bulk", json={"readings": [reading]}).json()["results"][0]
        assert _strip(single) == _strip(via_deployment)


def test_columns_fast_path_identical_to_deployment_path(http: httpx.Client) -> None:
    """Columnar requests this small are scored in the ingress; row bulk goes through
    the equipment deployment. Same rows, bit-identical numbers."""
    rows = sim_rows("normal", 20) + sim_rows("overstrain", 20)
    cols = http.post("/predict/columns", json={"equipment_id": "press-02", "power": "7.5kW",
                                               "columns": {f: [r[f] for r in rows] for f in rows[0]}}).json()
    bulk = http.post("/predict/bulk", json={"readings": [
        {"equipment_id": "press-02", "power": "7.5kW", "features": r} for r in rows]}).json()["results"]
    assert cols["rows"] == len(rows) and not cols["errors"] and any(cols["anomaly"])
    assert cols["anomaly"] == [b["anomaly"] for b in bulk]
    assert cols["score"] == [b["score"] for b in bulk]
    for name in ("thermal", "mechanical"):
        assert cols["modalities"][name]["error"] == [b["modalities"][name]["error"] for b in bulk]


def test_binary_columns_through_serve_agree_with_json_columns(http: httpx.Client) -> None:
    """The raw float64 body through Serve's entry point gives the JSON columns' answer."""

    rows = sim_rows("normal", 20) + sim_rows("overstrain", 20)
    names = list(rows[0])
    raw = np.array([[r[f] for r in rows] for f in names], dtype="<f8").tobytes()
    got = http.post("/predict/columns/binary", content=raw, headers={"content-type": "application/octet-stream"},
                    params={"equipment_id": "press-02", "power": "7.5kW", "features": ",".join(names)})
    assert got.status_code == 200, got.text
    want = http.post("/predict/columns", json={"equipment_id": "press-02", "power": "7.5kW",
                                               "columns": {f: [r[f] for r in rows] for f in names}}).json()
    got_body = got.json()
    assert got_body["rows"] == 40 and any(got_body["anomaly"])
    for key in ("anomaly", "score", "modalities", "classifier", "errors", "power", "model_version"):
        assert got_body[key] == want[key], key
    bad = http.post("/predict/columns/binary", content=raw[:-3], headers={"content-type": "application/octet-stream"},
                    params={"equipment_id": "press-02", "power": "7.5kW", "features": ",".join(names)})
    assert bad.status_code == 422 and "not a whole number of rows" in bad.text


def test_bulk_batch_agrees_with_single_rows(http: httpx.Client) -> None:
    rows = sim_rows("normal", 10) + sim_rows("tool_wear", 10) + sim_rows("normal", 10, power="5.5kW")
    readings = [{"equipment_id": "press-02", "features": f} for f in rows]
    bulk = http.post("/predict/bulk", json={"readings": readings}).json()["results"]
    for item, reading in zip(bulk, readings, strict=True):
        single = http.post("/predict", json=reading).json()
        for key in ("power", "model_version", "anomaly", "classifier"):
            assert item[key] == single[key], key
        assert item["score"] == pytest.approx(single["score"], rel=1e-9)
        for name, m in item["modalities"].items():
            assert m["error"] == pytest.approx(single["modalities"][name]["error"], rel=1e-9)


def test_bulk_mixed_equipment_in_order(http: httpx.Client) -> None:
    rows = sim_rows("normal", 300)
    eqs = ["press-02", "pump-03", "ghost"]
    readings = [{"equipment_id": eqs[i % 3], "power": "7.5kW", "features": f} for i, f in enumerate(rows)]
    r = http.post("/predict/bulk", json={"readings": readings})
    assert r.status_code == 200
    body = r.json()
    assert body["errors"] == 100
    for i, item in enumerate(body["results"]):
        if i % 3 == 2:
            assert item["status"] == 404
        else:
            assert item["equipment_id"] == eqs[i % 3]


def test_bulk_over_limit(http: httpx.Client) -> None:
    reading = {"equipment_id": "pump-03", "features": {"air_temp_k": 300.0, "process_temp_k": 310.0}}
    r = http.post("/predict/bulk", json={"readings": [reading] * 2001})
    assert r.status_code == 413 and "limit is 2000" in r.json()["message"]


def test_bundles_endpoint(http: httpx.Client) -> None:
    bundles = http.get("/bundles").json()["bundles"]
    assert {(b["equipment_id"], b["power"]) for b in bundles} == {
        (e, p) for e in ("mill-01", "press-02", "pump-03") for p in ("5.5kW", "7.5kW")}
    press = http.get("/bundles", params={"equipment_id": "press-02"}).json()["bundles"]
    shipped = [b for b in press if b["model_version"] == "1.0.0"]  # other tests may add versions
    assert {b["power"] for b in shipped} == {"5.5kW", "7.5kW"}
    assert all(b["classifier"]["classes"][0] == "none" for b in shipped)


def test_health(http: httpx.Client) -> None:
    assert http.get("/health/live").status_code == 200
    ready = http.get("/health/ready").json()
    assert ready["status"] == "ready" and ready["unavailable_deployments"] == []
    # The cluster runs throughput-optimised, so hops to equipment deployments go over
    # gRPC, although the test process imported Ray Serve before that flag was set.
    assert ready["handle_transport"] == ["gRPC"]


def test_docs_served(cluster) -> None:
    assert httpx.get(cluster.http_url + "/docs").status_code == 200
    spec = httpx.get(cluster.http_url + "/openapi.json").json()
    assert "/api/v1/serve-ml/predict" in spec["paths"]


def test_deployments_lists_replicas_by_state(http: httpx.Client) -> None:
    body = http.get("/deployments").json()
    assert body["app"] == "RUNNING", body
    deps = body["deployments"]
    assert "Ingress" in deps and any(name.startswith("equipment-") for name in deps), deps
    assert all(d["replicas"].get("RUNNING", 0) >= 1 for d in deps.values() if d["status"] == "HEALTHY"), deps
