"""The audit trail over the real database: operator and admin actions, refused
attempts included, are recorded with who, what, when and from where, and only an
admin may read them."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

from fastapi.testclient import TestClient

from serve_ml.deployments.api import create_api
from serve_ml.deployments.auth import TokenGuard
from serve_ml.deployments.local import LocalCore
from serve_ml.pipelines.stack import Stack
from serve_ml.scoring.service import ScoringService
from tests.opskit import API, OPERATOR, OPERATOR_TOKEN, VIEWER, VIEWER_TOKEN

ADMIN_TOKEN = "audit-admin-token-0001"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_actions_are_audited_with_who_what_when_and_where(stack: Stack, ops_root: Path) -> None:
    core = LocalCore(ScoringService(ops_root, enable_xgb=False), max_bulk_rows=100, database_url=stack.database_url,
                     guard=TokenGuard(ADMIN_TOKEN, VIEWER_TOKEN, operator_token=OPERATOR_TOKEN))
    eq = f"audit-{secrets.token_hex(3)}"
    since = dt.datetime.now(dt.UTC)
    with TestClient(create_api(core, max_request_bytes=1 << 20)) as c:
        assert c.put(f"{API}/equipment/{eq}", json={"location": "audit-site"}, headers=OPERATOR).status_code in (
            200, 201)
        refused = c.put(f"{API}/equipment/{eq}", json={"location": "elsewhere"}, headers=VIEWER)
        assert refused.status_code == 403
        assert c.post(f"{API}/sync", headers=OPERATOR).status_code == 403
        assert c.post(f"{API}/sync", headers=ADMIN).status_code == 200
        assert c.post(f"{API}/predict", json={"equipment_id": "x", "features": {"a": 1.0}},
                      headers=VIEWER).status_code in (404, 422)  # scoring is not an action: not audited
        assert c.get(f"{API}/audit", headers=OPERATOR).status_code == 403
        r = c.get(f"{API}/audit", params={"start": since.isoformat()}, headers=ADMIN)
        assert r.status_code == 200, r.text
        entries = [e for e in r.json()["entries"] if e["path"] in (f"{API}/equipment/{eq}", f"{API}/sync")]
    got = [(e["subject"], e["role"], e["method"], e["route"], e["status"]) for e in reversed(entries)]
    assert got == [
        ("token:operator", "operator", "PUT", f"{API}/equipment/{{equipment_id}}", got[0][4]),
        ("token:viewer", "viewer", "PUT", f"{API}/equipment/{{equipment_id}}", 403),
        ("token:operator", "operator", "POST", f"{API}/sync", 403),
        ("token:admin", "admin", "POST", f"{API}/sync", 200),
    ], got
    assert got[0][4] in (200, 201)
    assert all(e["client"] == "testclient" and dt.datetime.fromisoformat(e["at"]) >= since for e in entries)
    assert not [e for e in r.json()["entries"] if e["path"].endswith("/predict")]
