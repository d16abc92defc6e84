"""POST /train without Ray or without a database answers 503 saying which is
missing; it is an admin route at the edge and in the route; a malformed request is
a 422 naming the field. (Jobs on a real cluster: tests/integration/test_train.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from serve_ml.core.settings import Settings
from serve_ml.deployments.edge import PREFIX, gate
from serve_ml.deployments.local import create_local_app

ADMIN = {"Authorization": "Bearer unit-admin-token-001"}
BODY = {"equipment_id": "press-02", "power": "7.5kW", "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}


@pytest.fixture(scope="module")
def client(demo_root: Path) -> TestClient:
    return TestClient(create_local_app(Settings(root=demo_root, admin_token=SecretStr("unit-admin-token-001"),
                                                read_token=SecretStr("unit-read-token-0001"))))


def test_training_needs_a_database_and_says_so(client: TestClient) -> None:
    r = client.post(f"{PREFIX}/train", json=BODY, headers=ADMIN)
    assert r.status_code == 503 and "no database" in r.json()["message"]


def test_train_routes_are_admin_only(client: TestClient) -> None:
    assert {gate(f"{PREFIX}/train", "POST"), gate(f"{PREFIX}/train", "GET"),
            gate(f"{PREFIX}/train/abc", "GET")} == {"admin"}
    viewer = {"Authorization": "Bearer unit-read-token-0001"}
    assert client.post(f"{PREFIX}/train", json=BODY, headers=viewer).status_code == 403
    assert client.get(f"{PREFIX}/train/abc", headers=viewer).status_code == 403
    assert client.post(f"{PREFIX}/train", json=BODY).status_code == 401


@pytest.mark.parametrize(("change", "says"), [
    ({"start": "2026-01-03T00:00:00Z"}, "start must be before end"),
    ({"start": "2026-01-01T00:00:00"}, "timezone"),
    ({"epochs": 0}, "epochs"),
    ({"model_version": "../x"}, "not a safe name"),
    ({"extra": 1}, "extra"),
])
def test_a_malformed_request_is_refused_naming_the_problem(client: TestClient, change: dict, says: str) -> None:
    r = client.post(f"{PREFIX}/train", json={**BODY, **change}, headers=ADMIN)
    assert r.status_code == 422 and says in r.text, r.text


def test_the_route_is_documented(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    post = doc["paths"][f"{PREFIX}/train"]["post"]
    assert "202" in post["responses"] and "503" in post["responses"]
    assert f"{PREFIX}/train/{{job_id}}" in doc["paths"]
