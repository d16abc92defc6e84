"""The Python client against the real API in process (sync and asyncio): every call
answers as the routes do, errors arrive as ApiError with the server's words, and a
503 with Retry-After is waited out and sent again."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI, Response
from fastapi.testclient import TestClient

from serve_ml.client import ApiError, AsyncClient, Client, RetryPolicy
from serve_ml.deployments.api import create_api
from serve_ml.deployments.auth import TokenGuard
from serve_ml.deployments.local import LocalCore
from serve_ml.scoring.metrics import NoMetrics
from serve_ml.scoring.service import ScoringService
from tests.samples import sim_rows

ADMIN_TOKEN = "admin-token-0000000001"
READ_TOKEN = "read-token-00000000001"


def _app(root: Path) -> FastAPI:
    core = LocalCore(ScoringService(root, enable_xgb=True, metrics=NoMetrics()), max_bulk_rows=5000,
                     guard=TokenGuard(ADMIN_TOKEN, READ_TOKEN))
    return create_api(core, max_request_bytes=8 << 20)


def _client(root: Path, token: str | None = READ_TOKEN) -> Client:
    return Client(token=token, http=TestClient(_app(root)))


def test_predict_bulk_and_columns_agree(demo_root: Path) -> None:
    c = _client(demo_root)
    rows = sim_rows("normal", 30, "7.5kW") + sim_rows("overstrain", 30, "7.5kW")
    one = c.predict("press-02", rows[45])
    bulk = c.predict_bulk([{"equipment_id": "press-02", "features": r} for r in rows])
    frame = pd.DataFrame(rows)
    cols = c.predict_columns("press-02", frame)
    as_arrays = c.predict_columns("press-02", {k: frame[k].to_numpy() for k in frame.columns}, dtype="float32")
    assert [r["score"] for r in bulk["results"]] == pytest.approx(cols["score"])
    assert one["score"] == pytest.approx(cols["score"][45])
    assert cols["rows"] == 60 and sum(cols["anomaly"][30:]) > 15
    assert as_arrays["score"] == pytest.approx(cols["score"], rel=1e-3)


def test_windows_go_as_rows_x_steps_feature_after_feature() -> None:
    from serve_ml.client.calls import Calls

    a, b = np.arange(12.0).reshape(4, 3), -np.arange(12.0).reshape(4, 3)
    call = Calls.predict_columns("seq-01", {"a": a, "b": b}, "7.5kW", None, "float64")
    assert call.params["steps"] == 3 and call.params["features"] == "a,b"
    assert np.frombuffer(call.content, "<f8").tolist() == a.ravel().tolist() + b.ravel().tolist()
    with pytest.raises(ValueError, match="same shape"):
        Calls.predict_columns("seq-01", {"a": a, "b": np.ones(4)}, None, None, "float64")


def test_a_window_is_scored_like_the_same_window_as_columns(tmp_path: Path) -> None:
    from tests.conftest import build_seq_bundle

    build_seq_bundle(tmp_path, "seq-01", "7.5kW", "1.0.0", steps=4)
    c = _client(tmp_path)
    names = ("air_temp_k", "process_temp_k", "vibration_rms_mm_s", "current_a")
    rows = [{f: r[f] for f in names} for r in sim_rows("normal", 6, "7.5kW")]
    one = c.predict_window("seq-01", rows, power="7.5kW")
    cols = c.predict_columns("seq-01", {f: np.array([[r[f] for r in rows[-4:]]]) for f in names}, power="7.5kW")
    assert one["score"] == pytest.approx(cols["score"][0]) and one["modalities"]["motor"]["status"] == "scored"
    with pytest.raises(ApiError, match="needs a window of 4"):
        c.predict_window("seq-01", rows[:2], power="7.5kW")


def test_errors_carry_the_servers_type_and_message(demo_root: Path) -> None:
    c = _client(demo_root)
    with pytest.raises(ApiError) as err:
        c.predict("ghost-01", {"air_temp_k": 300.0})
    assert err.value.status_code == 404 and err.value.type == "EquipmentNotFound"
    assert "ghost-01" in err.value.server_message
    with pytest.raises(ApiError) as err:
        c.sync()  # the read token cannot manage bundles
    assert err.value.status_code == 403
    with pytest.raises(ApiError) as err:
        _client(demo_root, token=None).bundles()
    assert err.value.status_code == 401


def test_bundles_report_and_management(demo_root: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(demo_root, tmp_path / "root")
    admin = _client(tmp_path / "root", token=ADMIN_TOKEN)
    listed = admin.bundles(equipment_id="pump-03", power="7.5kW")["bundles"]
    assert [b["model_version"] for b in listed] == ["1.0.0"]
    assert admin.report("pump-03", "7.5kW", "1.0.0")["model_version"] == "1.0.0"
    assert admin.sync()["unchanged"]
    pinned = admin.activate("pump-03", "7.5kW", "1.0.0", reason="pin it")
    assert pinned["live"] == "1.0.0" and pinned["pinned"] is True
    assert admin.unpin("pump-03", "7.5kW", reason="let newer win")
    assert admin.whoami()["role"] == "admin"


def test_a_503_with_retry_after_is_waited_out() -> None:
    calls: list[int] = []
    app = FastAPI()

    @app.post("/api/v1/serve-ml/predict")
    async def busy() -> Response:
        calls.append(1)
        if len(calls) < 3:
            return Response('{"error":"Overloaded","message":"queue full"}', 503, {"Retry-After": "0"},
                            media_type="application/json")
        return Response('{"score": 1.0}', media_type="application/json")

    c = Client(http=TestClient(app), retry=RetryPolicy(attempts=3))
    assert c.predict("x", {"a": 1.0}) == {"score": 1.0} and len(calls) == 3
    calls.clear()
    c = Client(http=TestClient(app), retry=RetryPolicy(attempts=2))
    with pytest.raises(ApiError) as err:
        c.predict("x", {"a": 1.0})
    assert err.value.status_code == 503 and err.value.retry_after_s == 0.0


def test_retry_waits_what_the_server_asks_within_the_cap() -> None:
    policy = RetryPolicy(max_wait_s=5.0, default_wait_s=0.25)
    assert policy.wait_s(1, "2") == 2.0
    assert policy.wait_s(1, "120") == 5.0
    assert policy.wait_s(3, None) == 1.0
    assert policy.wait_s(1, "soon") == 0.25


async def test_the_async_client_makes_the_same_calls(demo_root: Path) -> None:
    transport = httpx.ASGITransport(app=_app(demo_root))
    async with httpx.AsyncClient(transport=transport, base_url="http://serve-ml") as http:
        c = AsyncClient(token=READ_TOKEN, http=http)
        rows = sim_rows("normal", 5, "5.5kW")
        cols = await c.predict_columns("pump-03", pd.DataFrame(rows), power="5.5kW")
        one = await c.predict("pump-03", rows[2], power="5.5kW")
        assert one["score"] == pytest.approx(cols["score"][2])
        assert (await c.bundles("pump-03"))["bundles"]
        with pytest.raises(ApiError):
            await c.predict("pump-03", {"not_a_sensor": 1.0}, power="5.5kW")


def test_a_dropped_connection_is_retried_only_where_repeating_is_safe() -> None:
    from serve_ml.client.calls import Calls, retry_wait

    policy = RetryPolicy(attempts=3, default_wait_s=0.25)
    scoring, sync = Calls.predict("x", {"a": 1.0}, None, None), Calls.sync()
    assert retry_wait(scoring, policy, 1, dropped=True) == 0.25
    assert retry_wait(sync, policy, 1, dropped=True) is None  # it may have happened: never twice
    assert retry_wait(sync, policy, 1, status=503, retry_after="2") == 2.0  # refused before acting
    assert retry_wait(scoring, policy, 3, status=503) is None  # attempts spent
    assert retry_wait(scoring, policy, 1, status=404) is None
