"""HTTP predictions stored like stream ones (SERVE_ML_STORE_HTTP_PREDICTIONS): through
the real broker to the shared stack's scorer, into the same tables, with the score the
HTTP client was given; a broker that does not acknowledge is a 503 naming it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from serve_ml.core.ports import free_port
from serve_ml.deployments.api import create_api
from serve_ml.deployments.http_store import HttpStore
from serve_ml.deployments.local import LocalCore
from serve_ml.pipelines.stack import Stack
from serve_ml.scoring.service import ScoringService
from tests.opskit import API
from tests.samples import sim_rows
from tests.streamkit import q


@contextmanager
def storing_api(root: Path, store: HttpStore, database_url: str | None = None) -> Iterator[TestClient]:
    core = LocalCore(ScoringService(root, enable_xgb=False), max_bulk_rows=100, database_url=database_url,
                     http_store=store)
    with TestClient(create_api(core, max_request_bytes=1 << 20)) as client:  # its shutdown closes the store
        yield client


def _stored(stack: Stack, marks: list[float], timeout_s: float = 60) -> dict[float, dict]:
    """Stored predictions of the readings whose torque is one of ``marks``."""
    sql = ("SELECT (r.features->>'torque_nm')::float8 AS mark, p.model_version, p.score, p.anomaly "
           "FROM serve_ml_readings r JOIN serve_ml_predictions p USING (equipment_id, time, reading_key) "
           "WHERE r.equipment_id = 'press-02' AND r.time > now() - interval '10 minutes' "
           "AND (r.features->>'torque_nm')::float8 = ANY($1::float8[])")
    deadline = time.monotonic() + timeout_s
    while True:
        got = {r["mark"]: dict(r) for r in q(stack, sql, marks)}
        if len(got) >= len(marks) or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def test_http_predictions_are_stored_by_the_stream_with_the_score_the_client_got(
        stack: Stack, serve_root: Path) -> None:
    rows = sim_rows("normal", 4, "5.5kW", seed=int(time.time()) % 100_000)
    marks = [round(40.0 + i * 0.001 + (time.time() % 1) / 1000, 9) for i in range(4)]
    for r, m in zip(rows, marks, strict=True):
        r["torque_nm"] = m  # tells these readings apart from every other test's
    store = HttpStore(stack.bootstrap, stack.settings.features_topic)
    with storing_api(serve_root, store) as api:
        one = api.post(f"{API}/predict", json={"equipment_id": "press-02", "power": "5.5kW", "features": rows[0]})
        assert one.status_code == 200, one.text
        bulk = api.post(f"{API}/predict/bulk", json={"readings": [
            *({"equipment_id": "press-02", "power": "5.5kW", "features": r} for r in rows[1:]),
            {"equipment_id": "no-such-machine", "features": rows[0]}]})
        assert bulk.status_code == 200 and bulk.json()["errors"] == 1
    assert store.sent == 4  # the unknown equipment's reading is not sent
    answered = [one.json(), *bulk.json()["results"][:3]]
    stored = _stored(stack, marks)
    assert sorted(stored) == sorted(marks), f"stored {sorted(stored)} of {marks}"
    for mark, res in zip(marks, answered, strict=True):
        got = stored[mark]
        assert got["model_version"] == res["model_version"]
        assert abs(got["score"] - res["score"]) < 1e-9 and got["anomaly"] == res["anomaly"]


def test_a_broker_that_does_not_acknowledge_makes_the_request_a_503_that_says_so(serve_root: Path) -> None:
    port = free_port()
    with storing_api(serve_root, HttpStore(f"127.0.0.1:{port}", "serve-ml.features")) as api:
        r = api.post(f"{API}/predict", json={"equipment_id": "press-02", "power": "5.5kW",
                                             "features": sim_rows("normal", 1, "5.5kW")[0]})
    assert r.status_code == 503
    assert "scored, but not stored" in r.json()["message"] and f"127.0.0.1:{port}" in r.json()["message"]
