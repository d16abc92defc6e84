"""The HTTP edge without Ray: validation, error translation, size limits.

Drives the same FastAPI factory the Serve ingress uses, over the in-process core.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serve_ml.core.settings import Settings
from serve_ml.deployments.local import create_local_app
from tests.conftest import DEMO_ROOT

API = "/api/v1/serve-ml"


@pytest.fixture(scope="module")
def client(demo_root: Path) -> TestClient:
    s = Settings(root=demo_root, max_bulk_rows=5, max_request_bytes=64 * 1024)
    return TestClient(create_local_app(s))


def reading(demo_root: Path, eq: str = "press-02", power: str = "7.5kW") -> dict:
    rows = json.loads((demo_root / eq / power / "1.0.0" / "warmup.json").read_text())["rows"]
    return {"equipment_id": eq, "power": power, "features": rows[0]}


def test_predict_ok(client: TestClient, demo_root: Path) -> None:
    r = client.post(f"{API}/predict", json=reading(demo_root))
    assert r.status_code == 200
    body = r.json()
    assert (body["equipment_id"], body["power"], body["model_version"]) == ("press-02", "7.5kW", "1.0.0")
    assert body["latency_ms"] > 0 and set(body["modalities"]) == {"thermal", "mechanical"}


@pytest.mark.parametrize("body, status, needle", [
    ({"equipment_id": "nope", "features": {"air_temp_k": 1.0}}, 404, "unknown equipment_id 'nope'; known: mill-01"),
    ({"equipment_id": "press-02", "power": "11kW", "features": {"air_temp_k": 1.0}}, 404, "known: 5.5kW, 7.5kW"),
    ({"equipment_id": "press-02", "power": "7.5kW", "model_version": "3", "features": {"air_temp_k": 1.0}},
     404, "no model_version '3'"),
    ({"equipment_id": "press-02", "power": "7.5kW", "features": {"air_temp_k": 300.0}}, 422, "process_temp_k: missing"),
    ({"equipment_id": "press-02", "power": "7.5kW", "features": {"wat": 1.0}}, 422, "wat: unknown feature"),
    ({"equipment_id": "press-02", "features": {"air_temp_k": "hot"}}, 422, "features.air_temp_k"),
    ({"equipment_id": "press-02", "features": {"air_temp_k": True}}, 422, "features.air_temp_k"),
    ({"equipment_id": "press-02"}, 422, "features: expected a non-empty object of name -> number"),
    ({"equipment_id": "press-02", "features": {"air_temp_k": 1.0}, "extra": 1}, 422, "unknown fields: extra"),
    ({"equipment_id": "press-02", "features": {"air_temp_k": 300.0, "process_temp_k": 310.0}}, 400,
     "cannot choose a power class"),
])
def test_predict_errors_name_the_problem(client: TestClient, body: dict, status: int, needle: str) -> None:
    r = client.post(f"{API}/predict", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["message"], r.json()


def test_non_finite_feature_is_422(client: TestClient, demo_root: Path) -> None:
    body = reading(demo_root)
    raw = json.dumps(body).replace(str(body["features"]["torque_nm"]), "Infinity", 1)
    r = client.post(f"{API}/predict", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "torque_nm" in r.json()["message"]


def test_malformed_json_is_422(client: TestClient) -> None:
    r = client.post(f"{API}/predict", content=b'{"equipment_id": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "InvalidRequest"


def test_bulk_in_order_with_per_row_errors(client: TestClient, demo_root: Path) -> None:
    good = reading(demo_root)
    pump = reading(demo_root, "pump-03", "5.5kW")
    body = {"readings": [good, {"equipment_id": "ghost", "features": good["features"]}, pump]}
    r = client.post(f"{API}/predict/bulk", json=body)
    assert r.status_code == 200
    res = r.json()["results"]
    assert [x.get("equipment_id") for x in res] == ["press-02", None, "pump-03"]
    assert res[1]["status"] == 404 and "ghost" in res[1]["error"]["message"]
    assert r.json()["errors"] == 1


def test_bulk_over_row_limit_is_413(client: TestClient, demo_root: Path) -> None:
    r = client.post(f"{API}/predict/bulk", json={"readings": [reading(demo_root)] * 6})
    assert r.status_code == 413 and "limit is 5" in r.json()["message"]


def test_body_over_byte_limit_is_413(client: TestClient) -> None:
    r = client.post(f"{API}/predict", content=b"x" * (65 * 1024), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds" in r.json()["message"]


def test_bundles_listing_and_filters(client: TestClient) -> None:
    all_ = client.get(f"{API}/bundles").json()["bundles"]
    assert len(all_) == len(list(DEMO_ROOT.glob("*/*/*"))) and all(b["live"] for b in all_)
    pump = client.get(f"{API}/bundles", params={"equipment_id": "pump-03", "power": "7.5kW"}).json()["bundles"]
    assert len(pump) == 1 and pump[0]["classifier"] is None and pump[0]["default_power"] is True
    assert pump[0]["modalities"]["thermal"]["threshold"] > 0


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get(f"{API}/health/live").json() == {"status": "ok"}
    assert client.get(f"{API}/health/ready").json()["status"] == "ready"
    paths = client.get("/openapi.json").json()["paths"]
    assert {f"{API}/predict", f"{API}/predict/bulk", f"{API}/bundles", f"{API}/sync"} <= set(paths)


def test_chunked_body_over_limit_is_413(client: TestClient) -> None:
    def gen():
        for _ in range(70):
            yield b"x" * 1024

    r = client.post(f"{API}/predict", content=gen(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds" in r.json()["message"]


def test_edge_labels_are_the_routes(client: TestClient) -> None:
    edge = next(m for m in client.app.user_middleware if m.cls.__name__ == "EdgeMiddleware")
    assert f"{API}/predict" in edge.kwargs["routes"] and f"{API}/predict/bulk" in edge.kwargs["routes"]


def test_app_builder_validates_raw_args() -> None:
    import pydantic

    from serve_ml.deployments.app import AppArgs, build_app

    with pytest.raises(pydantic.ValidationError, match="no_such_option"):
        build_app({"no_such_option": 1})
    assert AppArgs.model_validate({"fast_path": False}).fast_path is False


def test_columns_ok_and_agrees_with_bulk(client: TestClient, demo_root: Path) -> None:
    rows = json.loads((demo_root / "press-02" / "7.5kW" / "1.0.0" / "warmup.json").read_text())["rows"][:4]
    cols = {f: [r[f] for r in rows] for f in rows[0]}
    r = client.post(f"{API}/predict/columns", json={"equipment_id": "press-02", "power": "7.5kW", "columns": cols})
    assert r.status_code == 200, r.text
    body = r.json()
    bulk = client.post(f"{API}/predict/bulk", json={"readings": [
        {"equipment_id": "press-02", "power": "7.5kW", "features": row} for row in rows]}).json()["results"]
    assert body["rows"] == 4 and body["power"] == "7.5kW" and body["latency_ms"] >= 0
    assert body["anomaly"] == [b["anomaly"] for b in bulk]
    assert body["score"] == pytest.approx([b["score"] for b in bulk], rel=1e-12)


@pytest.mark.parametrize("body, status, needle", [
    ({"equipment_id": "ghost", "columns": {"a": [1.0]}}, 404, "ghost"),
    ({"equipment_id": "press-02", "power": "7.5kW", "columns": {"air_temp_k": [1.0, 2.0], "process_temp_k": [1.0]}},
     422, "differ in shape"),
    ({"equipment_id": "press-02", "power": "7.5kW", "columns": {"air_temp_k": ["hot"]}}, 422, "air_temp_k"),
    ({"equipment_id": "press-02", "power": "7.5kW", "columns": {"air_temp_k": [1.0] * 6, "process_temp_k": [1.0] * 6}},
     413, "limit is 5"),
    ({"equipment_id": "press-02", "columns": {}}, 422, "columns"),
])
def test_columns_errors_name_the_problem(client: TestClient, body: dict, status: int, needle: str) -> None:
    r = client.post(f"{API}/predict/columns", json=body)
    assert r.status_code == status, r.text
    assert needle in r.text


BIN = {"content-type": "application/octet-stream"}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_binary_columns_answer_as_json_columns(client: TestClient, demo_root: Path, dtype: str) -> None:
    import numpy as np

    rows = json.loads((demo_root / "press-02" / "7.5kW" / "1.0.0" / "warmup.json").read_text())["rows"][:4]
    names = list(rows[0])
    raw = np.array([[r[f] for r in rows] for f in names], dtype="<f8" if dtype == "float64" else "<f4")
    cols = {f: raw[j].astype(float).tolist() for j, f in enumerate(names)}  # what the server will see
    r = client.post(f"{API}/predict/columns/binary", content=raw.tobytes(), headers=BIN,
                    params={"equipment_id": "press-02", "power": "7.5kW", "features": ",".join(names), "dtype": dtype})
    assert r.status_code == 200, r.text
    j = client.post(f"{API}/predict/columns", json={"equipment_id": "press-02", "power": "7.5kW", "columns": cols})
    got, want = r.json(), j.json()
    assert got["rows"] == 4
    assert {k: v for k, v in got.items() if k != "latency_ms"} == {k: v for k, v in want.items() if k != "latency_ms"}


@pytest.mark.parametrize("params, body, headers, status, needle", [
    ({"equipment_id": "press-02", "features": "air_temp_k,process_temp_k"}, b"\0" * 24, BIN, 422,
     "24 bytes is not a whole number of rows of 2 float64 values"),
    ({"equipment_id": "press-02", "features": "air_temp_k,air_temp_k"}, b"\0" * 16, BIN, 422, "appears twice"),
    ({"equipment_id": "press-02", "features": "air_temp_k,,x"}, b"\0" * 24, BIN, 422, "every name must have 1 to 128 characters"),
    ({"equipment_id": "press-02", "features": "air_temp_k", "dtype": "int8"}, b"\0" * 8, BIN, 422, "dtype"),
    ({"equipment_id": "press-02", "features": "air_temp_k"}, b"", BIN, 422, "0 bytes"),
    ({"equipment_id": "press-02", "power": "7.5kW", "features": "air_temp_k"}, b"\0" * 48, BIN, 413, "limit is 5"),
    ({"equipment_id": "press-02", "features": "air_temp_k"}, b"\0" * 8, {"content-type": "application/json"}, 415,
     "application/octet-stream"),
    ({"features": "air_temp_k"}, b"\0" * 8, BIN, 422, "equipment_id"),
    ({"equipment_id": "ghost", "features": "a"}, b"\0" * 8, BIN, 404, "ghost"),
])
def test_binary_columns_errors_name_the_problem(client: TestClient, params: dict, body: bytes, headers: dict,
                                                status: int, needle: str) -> None:
    r = client.post(f"{API}/predict/columns/binary", content=body, params=params, headers=headers)
    assert r.status_code == status, r.text
    assert needle in r.text


async def test_client_gone_before_the_answer_is_not_counted_as_a_server_error() -> None:
    import asyncio

    from serve_ml.deployments.auth import TokenGuard
    from serve_ml.deployments.edge import CLIENT_CLOSED, EdgeMiddleware
    from serve_ml.scoring.metrics import NoMetrics

    class Recorded(NoMetrics):
        def __init__(self) -> None:
            self.seen: list[tuple[str, int]] = []

        def request(self, endpoint: str, status: int, latency_ms: float) -> None:
            self.seen.append((endpoint, status))

    async def slow_app(scope: dict, receive, send) -> None:
        await asyncio.sleep(60)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(_msg: dict) -> None:
        pass

    metrics = Recorded()
    edge = EdgeMiddleware(slow_app, metrics=metrics, max_bytes=1024, routes=frozenset({f"{API}/predict"}),
                          guard=TokenGuard(None, None))
    task = asyncio.create_task(edge({"type": "http", "path": f"{API}/predict", "headers": []}, receive, send))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert metrics.seen == [(f"{API}/predict", CLIENT_CLOSED)]
