"""The single-row predict answered without FastAPI's router gives what the route
gives, byte for byte but the timing, for good readings and for every refusal; the
edge's token check applies to it as to every route."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from serve_ml.core.settings import Settings
from serve_ml.deployments.api import hot
from serve_ml.deployments.api.hot import HotRoutes
from serve_ml.deployments.edge import gate
from serve_ml.deployments.local import create_local_app

API = "/api/v1/serve-ml"
TOKEN = {"Authorization": "Bearer hot-route-read-token-1"}


def _apps(root: Path) -> tuple[TestClient, TestClient]:
    s = Settings(root=root, read_token="hot-route-read-token-1", max_bulk_rows=5)
    with_hot, without = create_local_app(s), create_local_app(s)
    without.user_middleware = [m for m in without.user_middleware if m.cls is not HotRoutes]
    return TestClient(with_hot), TestClient(without)


def _row(root: Path) -> dict[str, float]:
    return json.loads((root / "press-02" / "7.5kW" / "1.0.0" / "warmup.json").read_text())["rows"][0]


def _same(a: Any, b: Any) -> None:
    assert a.status_code == b.status_code, (a.text, b.text)
    da, db = a.json(), b.json()
    if isinstance(da, dict):
        da.pop("latency_ms", None)
        db.pop("latency_ms", None)
    assert da == db


BODIES = [
    lambda r: orjson.dumps({"equipment_id": "press-02", "power": "7.5kW", "features": r}),
    lambda r: orjson.dumps({"equipment_id": "press-02", "features": r}),  # power chosen from the reading
    lambda r: orjson.dumps({"equipment_id": "nope", "features": r}),
    lambda r: orjson.dumps({"equipment_id": "press-02", "power": "7.5kW", "model_version": "9", "features": r}),
    lambda r: orjson.dumps({"equipment_id": "press-02", "features": {"wat": 1.0}}),
    lambda r: orjson.dumps({"equipment_id": "press-02", "features": {**r, "air_temp_k": "hot"}}),
    lambda r: orjson.dumps({"equipment_id": "press-02", "features": r, "extra": 1}),
    lambda r: orjson.dumps({"equipment_id": 7, "features": r}),
    lambda r: orjson.dumps({"features": r}),
    lambda r: orjson.dumps([1, 2]),
    lambda r: b'{"equipment_id": "press-02", "power": "7.5kW", "features": {"air_temp_k": NaN, "process_temp_k": 1}}',
    lambda r: b"{not json",
]


@pytest.mark.parametrize("make", BODIES)
def test_the_hot_route_answers_what_the_route_answers(demo_root: Path, make: Any) -> None:
    with_hot, without = _apps(demo_root)
    body = make(_row(demo_root))
    headers = {**TOKEN, "content-type": "application/json"}
    _same(with_hot.post(f"{API}/predict", content=body, headers=headers),
          without.post(f"{API}/predict", content=body, headers=headers))


def test_the_hot_route_answers_valid_readings_and_leaves_refusals_to_fastapi(demo_root: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with_hot, _ = _apps(demo_root)
    calls: list[int] = []
    original = hot.predict_one

    async def counted(core: Any, req: Any) -> Any:
        calls.append(1)
        return await original(core, req)

    monkeypatch.setattr(hot, "predict_one", counted)
    ok = with_hot.post(f"{API}/predict", json={"equipment_id": "press-02", "features": _row(demo_root)}, headers=TOKEN)
    assert ok.status_code == 200 and calls == [1]
    bad = with_hot.post(f"{API}/predict", json={"equipment_id": 7, "features": _row(demo_root)}, headers=TOKEN)
    assert bad.status_code == 422 and calls == [1]


def test_the_edge_guards_the_hot_route(demo_root: Path) -> None:
    assert gate(f"{API}/predict", "POST") == "read"
    with_hot, _ = _apps(demo_root)
    r = with_hot.post(f"{API}/predict", json={"equipment_id": "press-02", "features": _row(demo_root)})
    assert r.status_code == 401
    r = with_hot.post(f"{API}/predict", json={"equipment_id": "press-02", "features": _row(demo_root)},
                      headers={"Authorization": "Bearer wrong-token-000000000"})
    assert r.status_code in (401, 403)
