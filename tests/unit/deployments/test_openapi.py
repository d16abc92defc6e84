"""The documented contract says what the API answers: its own error body for every
error status, and the bearer token as a declared security scheme."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from serve_ml.core.settings import Settings
from serve_ml.deployments.local import create_local_app


def _app(demo_root: Path):  # type: ignore[no-untyped-def]
    return create_local_app(Settings(root=demo_root, admin_token="admin-token-00000001"))


def test_every_error_status_is_documented_with_the_projects_body(demo_root: Path) -> None:
    doc = _app(demo_root).openapi()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, resp in op["responses"].items():
                if status.startswith(("4", "5")):
                    schema = resp["content"]["application/json"]["schema"]
                    body = "V2ErrorBody" if path.startswith("/v2/") else "ErrorBody"
                    assert schema == {"$ref": f"#/components/schemas/{body}"}, (method, path, status)
    predict = doc["paths"]["/api/v1/serve-ml/predict"]["post"]
    assert {"400", "401", "403", "404", "413", "422", "503", "504"} <= set(predict["responses"])
    upload = doc["paths"]["/api/v1/serve-ml/bundles/upload"]["post"]
    assert "409" in upload["responses"]


def test_the_bearer_token_is_a_security_scheme(demo_root: Path) -> None:
    doc = _app(demo_root).openapi()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert doc["paths"]["/api/v1/serve-ml/sync"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in doc["paths"]["/api/v1/serve-ml/health/live"]["get"]


def test_a_malformed_body_answers_in_the_documented_shape(demo_root: Path) -> None:
    c = TestClient(_app(demo_root))
    r = c.post("/api/v1/serve-ml/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert set(r.json()) == {"error", "message", "detail"} and r.json()["error"] == "InvalidRequest"
    r = c.post("/api/v1/serve-ml/sync", headers={"Authorization": "Bearer wrong-token-000000"})
    assert r.status_code == 403 and set(r.json()) >= {"error", "message"}


def test_fastapis_own_refusals_answer_in_the_documented_shape(demo_root: Path) -> None:
    c = TestClient(_app(demo_root))
    admin = {"Authorization": "Bearer admin-token-00000001", "Content-Type": "application/json"}
    r = c.post("/api/v1/serve-ml/bundles/press-02/7.5kW/unpin", content=b"rJA\xff\x03", headers=admin)
    assert r.status_code == 422 and r.json()["error"] == "InvalidRequest" and "UTF-8" in r.json()["message"]
    r = c.get("/api/v1/serve-ml/no-such-route")
    assert r.status_code == 404 and set(r.json()) == {"error", "message"}
    r = c.get("/api/v1/serve-ml/predict")
    assert r.status_code == 405 and r.json()["error"] == "MethodNotAllowed"
