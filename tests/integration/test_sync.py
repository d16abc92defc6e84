"""POST /sync: new versions, new equipment, corrupt bundles and removals, live."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from bundles.loader import sha256_file
from tests.conftest import build_sim_bundle
from tests.integration.conftest import ADMIN
from tests.integration.test_http import sim_rows

pytestmark = pytest.mark.integration


def version_of(http: httpx.Client, eq: str, power: str, bulk: bool, version: str | None = None) -> str:
    reading = {"equipment_id": eq, "power": power, "model_version": version, "features": sim_rows("normal", 1, power)[0]}
    if bulk:
        r = http.post("/predict/bulk", json={"readings": [reading]})
        item = r.json()["results"][0]
    else:
        item = http.post("/predict", json=reading).json()
    assert "model_version" in item, item
    return item["model_version"]


def test_sync_new_version_goes_live_on_both_paths(http: httpx.Client, serve_root: Path) -> None:
    build_sim_bundle(serve_root, "pump-03", "7.5kW", "1.1.0", classifier=False,
                     power_range_kw=(5.5, 100.0), default_power=True)
    report = http.post("/sync", headers=ADMIN).json()
    assert report["added"] == ["pump-03/7.5kW/1.1.0"] and report["converged"] is True
    assert {"equipment_id": "pump-03", "power": "7.5kW", "from": "1.0.0", "to": "1.1.0"} in report["live_changes"]
    assert version_of(http, "pump-03", "7.5kW", bulk=False) == "1.1.0"
    assert version_of(http, "pump-03", "7.5kW", bulk=True) == "1.1.0"
    assert version_of(http, "pump-03", "7.5kW", bulk=True, version="1.0.0") == "1.0.0"
    listed = http.get("/bundles", params={"equipment_id": "pump-03", "power": "7.5kW"}).json()["bundles"]
    assert {b["model_version"]: b["live"] for b in listed} == {"1.0.0": False, "1.1.0": True}


def test_corrupt_bundle_rejected_and_live_version_kept(http: httpx.Client, serve_root: Path) -> None:
    src = serve_root / "pump-03" / "7.5kW" / "1.1.0"
    bad = serve_root / "pump-03" / "7.5kW" / "1.2.0"
    shutil.copytree(src, bad)
    manifest = (bad / "manifest.json").read_text().replace('"model_version": "1.1.0"', '"model_version": "1.2.0"')
    (bad / "manifest.json").write_text(manifest)
    (bad / "thermal.pt").write_bytes(b"garbage")
    report = http.post("/sync", headers=ADMIN).json()
    assert [r for r in report["rejected"] if r["path"].endswith("1.2.0")][0]["reason"].startswith("checksum mismatch")
    assert version_of(http, "pump-03", "7.5kW", bulk=False) == "1.1.0"
    assert version_of(http, "pump-03", "7.5kW", bulk=True) == "1.1.0"
    shutil.rmtree(bad)
    assert sha256_file(src / "thermal.pt")  # the live bundle's files are untouched


def test_new_equipment_servable_after_sync_then_removed(http: httpx.Client, serve_root: Path) -> None:
    build_sim_bundle(serve_root, "lathe-04", "7.5kW", "1.0.0", classifier=False)
    assert http.post("/predict", json={"equipment_id": "lathe-04", "features": sim_rows("normal", 1)[0]}).status_code == 404
    report = http.post("/sync", headers=ADMIN).json()
    assert report["added"] == ["lathe-04/7.5kW/1.0.0"]
    assert version_of(http, "lathe-04", "7.5kW", bulk=False) == "1.0.0"
    assert version_of(http, "lathe-04", "7.5kW", bulk=True) == "1.0.0"
    shutil.rmtree(serve_root / "lathe-04")
    report = http.post("/sync", headers=ADMIN).json()
    assert report["removed"] == ["lathe-04/7.5kW/1.0.0"]
    r = http.post("/predict", json={"equipment_id": "lathe-04", "features": sim_rows("normal", 1)[0]})
    assert r.status_code == 404


def test_sync_requires_the_admin_token(http: httpx.Client) -> None:
    assert http.post("/sync").status_code == 401
    assert http.post("/sync", headers={"Authorization": "Bearer wrong"}).status_code == 403
