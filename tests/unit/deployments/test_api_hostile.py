"""What an anonymous caller can make the HTTP edge do: bodies refused before they
are read, error messages that do not grow with the fleet, one parse per body,
health answers that do not turn into cluster calls per request."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from serve_ml.core.errors import MAX_NAMES_LISTED, EquipmentNotFound
from serve_ml.core.settings import Settings
from serve_ml.deployments.api import PARSE_INLINE_MAX_BYTES, create_api
from serve_ml.deployments.auth import TokenGuard
from serve_ml.deployments.edge import HEALTH_CACHE_S, EdgeMiddleware
from serve_ml.deployments.local import LocalCore, create_local_app
from serve_ml.scoring.metrics import NoMetrics
from serve_ml.scoring.service import ScoringService

API = "/api/v1/serve-ml"
READ = "reader-token-0001"


async def _drive(guard: TokenGuard, path: str, headers: list[tuple[bytes, bytes]], chunks: int) -> tuple[int, int]:
    """Send ``chunks`` 1 MiB chunks to the edge; (status answered, chunks it read)."""
    read, sent = [0], []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict:
        read[0] += 1
        return {"type": "http.request", "body": b"x" * (1 << 20), "more_body": read[0] < chunks}

    async def send(msg: dict) -> None:
        sent.append(msg)

    edge = EdgeMiddleware(app, metrics=NoMetrics(), max_bytes=64 << 20, routes=frozenset(), guard=guard)
    await edge({"type": "http", "method": "POST", "path": path, "headers": headers}, receive, send)
    return sent[0]["status"], read[0]


@pytest.mark.parametrize(("path", "guard", "status"), [
    (f"{API}/predict/bulk", TokenGuard("admin-token-00001", READ), 401),
    (f"{API}/sync", TokenGuard("admin-token-00001", None), 401),
    (f"{API}/bundles/upload", TokenGuard(None, None), 403),
    (f"{API}/bundles/press-02/7.5kW/activate", TokenGuard("admin-token-00001", None), 401),
])
def test_a_body_is_refused_before_a_byte_of_it_is_read(path: str, guard: TokenGuard, status: int) -> None:
    assert asyncio.run(_drive(guard, path, [], chunks=16)) == (status, 0)
    wrong = [(b"authorization", b"Bearer not-the-token-at-all")]
    assert asyncio.run(_drive(guard, path, wrong, chunks=16))[1] == 0


def test_with_the_token_the_body_is_read_whole() -> None:
    guard = TokenGuard("admin-token-00001", READ)
    auth = [(b"authorization", f"Bearer {READ}".encode())]
    assert asyncio.run(_drive(guard, f"{API}/predict/bulk", auth, chunks=4)) == (200, 4)


def test_an_unknown_equipment_names_a_bounded_part_of_the_fleet() -> None:
    fleet = [f"machine-{i:04d}" for i in range(1000)]
    message = EquipmentNotFound("nope", fleet).message
    assert message.count("machine-") == MAX_NAMES_LISTED and f"and {1000 - MAX_NAMES_LISTED} more" in message
    assert len(message) < 300


def test_a_large_body_with_nan_is_refused_after_one_parse(demo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    calls = []
    real = json.loads
    def counted(doc: Any, *a: Any, **kw: Any) -> Any:
        if len(doc) > PARSE_INLINE_MAX_BYTES:
            calls.append(len(doc))
        return real(doc, *a, **kw)

    monkeypatch.setattr(json, "loads", counted)
    c = TestClient(create_local_app(Settings(root=demo_root, max_request_bytes=8 << 20)))
    row = {"equipment_id": "pump-03", "power": "7.5kW", "features": {"air_temp_k": 300.0, "process_temp_k": 310.0}}
    n = PARSE_INLINE_MAX_BYTES // len(orjson.dumps(row)) + 10
    body = orjson.dumps({"readings": [row] * n})[:-2] + b',{"equipment_id":"pump-03","features":{"x":NaN}}]}'
    r = c.post(f"{API}/predict/bulk", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "NaN" in r.json()["message"], r.text[:300]
    assert calls == []  # the stdlib's second, slower parse of the large body never ran
    small = orjson.dumps({"equipment_id": "pump-03", "features": {"air_temp_k": 1.0}})[:-2] + b',"x":NaN}}'
    r = c.post(f"{API}/predict", content=small, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "x" in r.json()["message"]  # a small one still names the feature


def test_health_answers_are_cached_not_asked_of_the_cluster_per_request(demo_root: Path) -> None:
    service = ScoringService(demo_root, enable_xgb=False, metrics=NoMetrics())
    core = LocalCore(service, max_bulk_rows=100)
    calls = {"ready": 0, "stream": 0}
    ready, stream = core.ready, core.stream_health

    async def counted_ready() -> tuple[bool, dict]:
        calls["ready"] += 1
        return await ready()

    async def counted_stream() -> dict:
        calls["stream"] += 1
        return await stream()

    core.ready, core.stream_health = counted_ready, counted_stream  # type: ignore[method-assign]
    c = TestClient(create_api(core, max_request_bytes=1 << 20))
    for _ in range(50):
        assert c.get(f"{API}/health/ready").status_code == 200
        c.get(f"{API}/stream/health")
    assert calls == {"ready": 1, "stream": 1}
    time.sleep(HEALTH_CACHE_S + 0.1)
    c.get(f"{API}/health/ready")
    assert calls["ready"] == 2


def test_parameterised_routes_are_labelled_by_their_template(demo_root: Path) -> None:
    class Recorded(NoMetrics):
        def __init__(self) -> None:
            self.seen: list[tuple[str, int]] = []

        def request(self, endpoint: str, status: int, latency_ms: float) -> None:
            self.seen.append((endpoint, status))

    service = ScoringService(demo_root, enable_xgb=False, metrics=NoMetrics())
    core = LocalCore(service, max_bulk_rows=100)
    core.metrics = Recorded()
    c = TestClient(create_api(core, max_request_bytes=1 << 20))
    c.get(f"{API}/equipment/press-02/predictions")
    c.post(f"{API}/bundles/press-02/7.5kW/activate", json={"model_version": "1.0.0"})
    c.get(f"{API}/no/such/route")
    assert [e for e, _ in core.metrics.seen] == [f"{API}/equipment/{{equipment_id}}/predictions",
                                                 f"{API}/bundles/{{equipment_id}}/{{power}}/activate", "other"]
