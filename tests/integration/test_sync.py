"""POST /sync: new versions, new equipment, corrupt bundles and removals, live."""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from serve_ml.bundles.loader import sha256_file
from tests.conftest import build_sim_bundle
from tests.fixtures import graph_quiet, graph_settled, replica_actors
from tests.integration.conftest import ADMIN, API
from tests.samples import sim_rows

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
    graph_quiet()
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
    graph_quiet()
    live = version_of(http, "pump-03", "7.5kW", bulk=False)  # whatever other tests made live
    src = serve_root / "pump-03" / "7.5kW" / live
    bad = serve_root / "pump-03" / "7.5kW" / "9.9.0"
    shutil.copytree(src, bad)
    manifest = (bad / "manifest.json").read_text().replace(f'"model_version": "{live}"', '"model_version": "9.9.0"')
    (bad / "manifest.json").write_text(manifest)
    (bad / "thermal.pt").write_bytes(b"garbage")
    report = http.post("/sync", headers=ADMIN).json()
    assert [r for r in report["rejected"] if r["path"].endswith("9.9.0")][0]["reason"].startswith("checksum mismatch")
    assert version_of(http, "pump-03", "7.5kW", bulk=False) == live
    assert version_of(http, "pump-03", "7.5kW", bulk=True) == live
    shutil.rmtree(bad)
    http.post("/sync", headers=ADMIN)  # forget the rejected directory, for the tests after this one
    assert sha256_file(src / "thermal.pt")  # the live bundle's files are untouched


def _replicas(deployment: str) -> set[str]:
    return {a["name"] for a in replica_actors("serve-ml", deployment)}


def test_new_equipment_servable_after_sync_then_drained_and_removed(cluster, http: httpx.Client,
                                                                     serve_root: Path) -> None:
    """Servable at once after sync (scored by the ingress); then its own deployment is
    added in the background, and on removal drained and deleted, while a client loop
    sees no failure and other equipment keeps its replicas."""
    graph_quiet()
    others = {eq: _replicas(f"equipment-{eq}") for eq in ("mill-01", "press-02", "pump-03")}
    codes: Counter[int] = Counter()
    stop = threading.Event()
    row = sim_rows("normal", 1)[0]

    def client() -> None:
        with httpx.Client(base_url=cluster.http_url + API, timeout=60) as c:
            while not stop.is_set():
                codes[c.post("/predict", json={"equipment_id": "press-02", "power": "7.5kW", "features": row}).status_code] += 1
                codes[c.post("/predict/bulk", json={"readings": [{"equipment_id": "pump-03", "features": row}] * 20}).status_code] += 1

    loop = threading.Thread(target=client)
    loop.start()
    try:
        build_sim_bundle(serve_root, "lathe-04", "7.5kW", "1.0.0", classifier=False)
        assert http.post("/predict", json={"equipment_id": "lathe-04", "features": row}).status_code == 404
        report = http.post("/sync", headers=ADMIN).json()
        assert report["added"] == ["lathe-04/7.5kW/1.0.0"]
        assert report["deployments"]["adding"] == ["lathe-04"], report["deployments"]
        assert version_of(http, "lathe-04", "7.5kW", bulk=False) == "1.0.0"  # before the redeploy finishes
        assert version_of(http, "lathe-04", "7.5kW", bulk=True) == "1.0.0"
        graph = graph_settled()
        assert graph["last"]["ok"] and "equipment-lathe-04" in graph["deployments"], graph
        assert version_of(http, "lathe-04", "7.5kW", bulk=True) == "1.0.0"  # now through its own deployment

        shutil.rmtree(serve_root / "lathe-04")
        report = http.post("/sync", headers=ADMIN).json()
        assert report["removed"] == ["lathe-04/7.5kW/1.0.0"]
        assert report["deployments"]["removing"] == ["lathe-04"], report["deployments"]
        r = http.post("/predict", json={"equipment_id": "lathe-04", "features": row})
        assert r.status_code == 404  # no new work reaches it while it drains
        graph = graph_settled()
        assert graph["last"]["ok"] and "equipment-lathe-04" not in graph["deployments"], graph
        assert not _replicas("equipment-lathe-04")
    finally:
        stop.set()
        loop.join(60)
        if (serve_root / "lathe-04").exists():  # failed half-way: leave the graph as it was for the next test
            shutil.rmtree(serve_root / "lathe-04")
            http.post("/sync", headers=ADMIN)
            graph_settled()
    print(f"requests during add+remove: {dict(codes)}")
    assert set(codes) == {200}, codes
    assert {eq: _replicas(f"equipment-{eq}") for eq in others} == others  # not restarted


def test_sync_requires_the_admin_token(http: httpx.Client) -> None:
    assert http.post("/sync").status_code == 401
    assert http.post("/sync", headers={"Authorization": "Bearer wrong"}).status_code == 403
