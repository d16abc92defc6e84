"""Broken bundles dropped into the root of a running system: each one is rejected
with its reason, everything else keeps serving, and a sync answers 200, with a
database (real PostgreSQL) and without (the shared Ray cluster)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from serve_ml.bundles.loader import sha256_file
from serve_ml.core.settings import Settings
from serve_ml.deployments.local import create_local_app
from serve_ml.pipelines.stack import Stack
from tests.integration.conftest import ADMIN, API
from tests.streamkit import q

pytestmark = pytest.mark.integration
SRC = ("press-02", "7.5kW", "1.0.0")
BAD = {"9.0.1": "warmup.json", "9.0.2": "nested too deeply", "9.0.3": "link pointing outside the root"}


def plant(root: Path, outside: Path) -> list[Path]:
    """Three broken copies of a real bundle: a warm-up file that is no warm-up file, a
    manifest nested 5,000 deep, a bundle directory that is a link out of the root."""
    src = root.joinpath(*SRC)
    made = []
    for version, _why in BAD.items():
        dst = root / SRC[0] / SRC[1] / version
        if version == "9.0.3":
            real = outside / version
            shutil.copytree(src, real)
            dst.symlink_to(real)
        else:
            shutil.copytree(src, dst)
            m = json.loads((dst / "manifest.json").read_text())
            m["model_version"] = version
            if version == "9.0.1":
                (dst / "warmup.json").write_text(json.dumps({"rows": 5, "expected": 5}))
                m["files"]["warmup.json"] = sha256_file(dst / "warmup.json")
                (dst / "manifest.json").write_text(json.dumps(m))
            else:
                (dst / "manifest.json").write_text("[" * 5000 + "]" * 5000)
        made.append(dst)
    return made


def remove(paths: list[Path]) -> None:
    for p in paths:
        if p.is_symlink():
            p.unlink()
        else:
            shutil.rmtree(p, ignore_errors=True)


def reasons(report: dict) -> dict[str, str]:
    return {r["path"].rsplit("/", 1)[1]: r["reason"] for r in report["rejected"] if "/9.0." in r["path"]}


def test_broken_bundles_are_rejected_one_by_one_on_a_running_cluster(http: httpx.Client, serve_root: Path,
                                                                     tmp_path: Path) -> None:
    planted = plant(serve_root, tmp_path)
    try:
        r = http.post("/sync", headers=ADMIN)
        assert r.status_code == 200, r.text[:500]
        got = reasons(r.json())
        ok = http.post("/predict", json={"equipment_id": "press-02", "power": "7.5kW",
                                         "features": {"air_temp_k": 300.0, "process_temp_k": 310.0}})
        print(f"hostile bundles (ray): planted={len(planted)} rejected={len(got)} predict={ok.status_code}")
        assert set(got) == set(BAD) and all(BAD[v] in got[v] for v in BAD), got
        assert ok.status_code == 200 and ok.json()["model_version"] not in BAD
    finally:
        remove(planted)
        assert http.post("/sync", headers=ADMIN).status_code == 200


def test_sync_with_a_database_records_the_rejections_instead_of_answering_500(stack: Stack, tmp_path: Path,
                                                                             demo_root: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(demo_root, root)
    plant(root, tmp_path / "outside")
    app = create_local_app(Settings(root=root, database_url=stack.database_url,
                                    admin_token=SecretStr("hostile-admin-token")))
    r = TestClient(app).post(f"{API}/sync", headers={"Authorization": "Bearer hostile-admin-token"})
    assert r.status_code == 200, r.text[:500]
    rows = q(stack, "SELECT model_version, reason FROM serve_ml_models WHERE equipment_id = $1 AND power = $2 "
                    "AND status = 'rejected' AND model_version LIKE '9.0.%'", *SRC[:2])
    print(f"hostile bundles (postgres): planted={len(BAD)} recorded_rejected={len(rows)} status={r.status_code}")
    assert {row["model_version"] for row in rows} == set(BAD)
    assert all(BAD[row["model_version"]] in row["reason"] for row in rows)
