"""Management endpoints: token rules, and activate / pin / unpin / rollback."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from serve_ml.core.settings import Settings
from serve_ml.deployments.local import create_local_app
from tests.conftest import build_sim_bundle

API = "/api/v1/serve-ml"
ADMIN = {"Authorization": "Bearer s3cret-admin-token"}
MANAGEMENT = [("post", "/sync", None),
              ("post", "/bundles/pump-03/7.5kW/activate", {"model_version": "1.0.0"}),
              ("post", "/bundles/pump-03/7.5kW/unpin", {}),
              ("post", "/bundles/pump-03/7.5kW/rollback", {})]


def client(root: Path, **kw) -> TestClient:
    kw = {"admin_token": None, "admin_token_file": None, "read_token": None, **kw}  # never from the environment
    return TestClient(create_local_app(Settings(root=root, **kw)))


@pytest.mark.parametrize("method, path, body", MANAGEMENT)
def test_management_refused_when_no_token_configured(demo_root: Path, method: str, path: str, body) -> None:
    r = getattr(client(demo_root), method)(API + path, json=body, headers=ADMIN)
    assert r.status_code == 403 and "management is disabled" in r.json()["message"]


@pytest.mark.parametrize("method, path, body", MANAGEMENT)
def test_management_needs_the_right_token(demo_root: Path, method: str, path: str, body) -> None:
    c = client(demo_root, admin_token=SecretStr("s3cret-admin-token"))
    missing = getattr(c, method)(API + path, json=body)
    wrong = getattr(c, method)(API + path, json=body, headers={"Authorization": "Bearer nope"})
    assert missing.status_code == 401 and wrong.status_code == 403
    for r in (missing, wrong):
        assert "s3cret" not in r.text and "nope" not in r.text
    right = getattr(c, method)(API + path, json=body, headers=ADMIN)
    assert right.status_code in (200, 409), right.text  # 409: nothing to roll back to yet


def test_token_file(demo_root: Path, tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("token-from-a-file\n")
    c = client(demo_root, admin_token_file=f)
    assert c.post(f"{API}/sync", headers={"Authorization": "Bearer token-from-a-file"}).status_code == 200


def test_read_token_guards_predict_when_set(demo_root: Path) -> None:
    c = client(demo_root, read_token=SecretStr("reader-token-0001"), admin_token=SecretStr("s3cret-admin-token"))
    body = {"equipment_id": "pump-03", "power": "7.5kW", "features": {"air_temp_k": 300.0, "process_temp_k": 310.0}}
    assert c.post(f"{API}/predict", json=body).status_code == 401
    assert c.post(f"{API}/predict", json=body, headers={"Authorization": "Bearer reader-token-0001"}).status_code == 200
    assert c.post(f"{API}/predict", json=body, headers=ADMIN).status_code == 200
    assert c.get(f"{API}/bundles").status_code == 401
    assert client(demo_root).post(f"{API}/predict", json=body).status_code == 200  # open by default


def test_activate_pin_unpin_rollback_round_trip(root_copy: Path) -> None:
    build_sim_bundle(root_copy, "pump-03", "7.5kW", "1.1.0", classifier=False, power_range_kw=(5.5, 100.0),
                     default_power=True)
    c = client(root_copy, admin_token=SecretStr("s3cret-admin-token"))
    c.post(f"{API}/sync", headers=ADMIN)

    def live() -> tuple[str, bool]:
        b = [x for x in c.get(f"{API}/bundles", params={"equipment_id": "pump-03", "power": "7.5kW"}).json()["bundles"]
             if x["live"]]
        return b[0]["model_version"], b[0]["pinned"]

    assert live() == ("1.1.0", False)
    r = c.post(f"{API}/bundles/pump-03/7.5kW/activate", json={"model_version": "1.0.0", "reason": "regression"},
               headers=ADMIN).json()
    assert (r["from"], r["to"], r["live"], r["pinned"]) == ("1.1.0", "1.0.0", "1.0.0", True)
    assert live() == ("1.0.0", True)
    # a newer version appearing does not displace a pinned one
    build_sim_bundle(root_copy, "pump-03", "7.5kW", "1.2.0", classifier=False, power_range_kw=(5.5, 100.0),
                     default_power=True)
    c.post(f"{API}/sync", headers=ADMIN)
    assert live() == ("1.0.0", True)
    r = c.post(f"{API}/bundles/pump-03/7.5kW/rollback", json={"reason": "back"}, headers=ADMIN).json()
    assert (r["from"], r["to"]) == ("1.0.0", "1.1.0") and live() == ("1.1.0", True)
    r = c.post(f"{API}/bundles/pump-03/7.5kW/unpin", json={}, headers=ADMIN).json()
    assert live() == ("1.2.0", False)
    hist = c.get(f"{API}/bundles", params={"equipment_id": "pump-03"}).json()["history"]
    assert [h["action"] for h in hist] == ["pin", "rollback", "unpin"]
    assert hist[0]["reason"] == "regression" and hist[0]["at"] > 0
    # an unknown version is a 404 naming what exists, and changes nothing
    r = c.post(f"{API}/bundles/pump-03/7.5kW/activate", json={"model_version": "9.9"}, headers=ADMIN)
    assert r.status_code == 404 and "1.2.0" in r.json()["message"] and live() == ("1.2.0", False)


def test_unpinned_activation_yields_to_newer(root_copy: Path) -> None:
    build_sim_bundle(root_copy, "pump-03", "7.5kW", "1.1.0", classifier=False, power_range_kw=(5.5, 100.0))
    c = client(root_copy, admin_token=SecretStr("s3cret-admin-token"))
    c.post(f"{API}/sync", headers=ADMIN)
    r = c.post(f"{API}/bundles/pump-03/7.5kW/activate", json={"model_version": "1.0.0", "pin": False},
               headers=ADMIN).json()
    assert r["live"] == "1.0.0" and r["pinned"] is False
    build_sim_bundle(root_copy, "pump-03", "7.5kW", "1.2.0", classifier=False, power_range_kw=(5.5, 100.0))
    report = c.post(f"{API}/sync", headers=ADMIN).json()
    assert {"equipment_id": "pump-03", "power": "7.5kW", "from": "1.0.0", "to": "1.2.0"} in report["live_changes"]


@pytest.mark.parametrize(("env", "match"), [
    ({"SERVE_ML_READ_TOKEN": ""}, "SERVE_ML_READ_TOKEN is set but empty"),
    ({"SERVE_ML_READ_TOKEN": "   "}, "SERVE_ML_READ_TOKEN is set but empty"),
    ({"SERVE_ML_ADMIN_TOKEN": "short"}, "SERVE_ML_ADMIN_TOKEN is shorter than 16"),
])
def test_an_empty_or_short_token_is_refused_at_start(env: dict[str, str], match: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=match):
        Settings()


def test_a_short_token_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("abc\n")
    with pytest.raises(ValueError, match="shorter than 16"):
        Settings(admin_token_file=f).admin_secret()


def test_a_history_range_ending_at_the_start_of_time_is_a_422(demo_root: Path) -> None:
    c = client(demo_root)
    r = c.get(f"{API}/equipment/pump-03/predictions", params={"end": "0001-01-01T00:30:00Z"})
    assert r.status_code == 422 and "too early" in r.json()["message"], r.text


def test_a_floor_above_the_ceiling_is_refused_not_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    from serve_ml.deployments.app import Autoscaling

    with pytest.raises(ValueError, match="min_replicas 3 is above max_replicas 2"):
        Autoscaling(min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError, match="SERVE_ML_MIN_REPLICAS"):
        Autoscaling(min_replicas=5).resolve(Settings())  # the default ceiling is 2
    monkeypatch.setenv("SERVE_ML_MIN_REPLICAS", "4")
    with pytest.raises(ValueError, match=r"SERVE_ML_MIN_REPLICAS \(4\) is above SERVE_ML_MAX_REPLICAS \(2\)"):
        Settings()
