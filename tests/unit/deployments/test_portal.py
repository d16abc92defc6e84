"""The portal's assets as the HTTP app serves them: every page module reachable from
``/``, nothing fetched from elsewhere, and the role the portal asks about."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serve_ml.deployments.api import create_api
from serve_ml.deployments.auth import TokenGuard
from serve_ml.deployments.local import LocalCore
from serve_ml.deployments.portal import STATIC_DIR
from serve_ml.scoring.metrics import NoMetrics
from serve_ml.scoring.service import ScoringService
from tests.conftest import copy_without_evaluation

API = "/api/v1/serve-ml"
IMPORT = re.compile(r"""(?:import|from)\s*(?:[^'"]*?from\s*)?["'](\./[\w.-]+)["']""")


def _client(root: Path, guard: TokenGuard | None = None) -> TestClient:
    core = LocalCore(ScoringService(root, enable_xgb=False, metrics=NoMetrics()), max_bulk_rows=10, guard=guard)
    return TestClient(create_api(core, max_request_bytes=1 << 20))


def test_index_and_every_module_it_reaches_are_served(demo_root: Path) -> None:
    c = _client(demo_root)
    index = c.get("/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/portal/app.js">' in index.text
    seen, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        r = c.get(f"/portal/{name}")
        assert r.status_code == 200, name
        assert "javascript" in r.headers["content-type"], (name, r.headers["content-type"])
        todo += [m[2:] for m in IMPORT.findall(r.text)]
    assert {"api.js", "fleet.js", "equipment.js", "alarms.js", "bundles.js", "pipeline.js", "chart.js"} <= seen
    assert c.get("/portal/portal.css").status_code == 200
    assert c.get("/portal/../auth.py").status_code == 404


def test_no_asset_fetches_anything_from_another_host() -> None:
    for f in STATIC_DIR.iterdir():
        text = f.read_text()
        assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", text), f.name
        assert not re.search(r"""(?:fetch|import)\s*\(\s*["'`]https?://""", text), f.name


def test_api_data_is_never_parsed_as_markup() -> None:
    for f in STATIC_DIR.glob("*.js"):
        assert "innerHTML" not in f.read_text() and "insertAdjacentHTML" not in f.read_text(), f.name


@pytest.mark.parametrize(("header", "status", "role"), [
    ("Bearer admin-token-0001", 200, "admin"),
    ("Bearer operator-token-01", 200, "operator"),
    ("Bearer read-token-00001", 200, "viewer"),
    ("Bearer wrong-token-0001", 403, None),
    (None, 200, "anonymous"),
])
def test_whoami_names_the_tokens_role(demo_root: Path, header: str | None, status: int, role: str | None) -> None:
    guard = TokenGuard("admin-token-0001", "read-token-00001", operator_token="operator-token-01")
    r = _client(demo_root, guard).get(f"{API}/whoami", headers={"Authorization": header} if header else {})
    assert r.status_code == status, r.text
    if role:
        assert r.json() == {"role": role}


def test_without_a_read_token_anyone_is_a_viewer(demo_root: Path) -> None:
    c = _client(demo_root, TokenGuard("admin-token-0001", None))
    assert c.get(f"{API}/whoami").json() == {"role": "viewer"}
    assert c.get(f"{API}/whoami", headers={"Authorization": "Bearer admin-token-0001"}).json() == {"role": "admin"}


def test_a_versions_report_carries_its_histograms_rul_fit_and_provenance(rul_root: Path) -> None:
    r = _client(rul_root).get(f"{API}/bundles/press-02/7.5kW/1.0.0/report")
    assert r.status_code == 200, r.text
    doc = r.json()
    hists = doc["evaluation"]["modalities"]
    assert set(hists) == {"thermal", "mechanical"}
    for name, h in hists.items():
        assert h["threshold"] == doc["modalities"][name]["threshold"]
        assert len(h["edges"]) == len(h["normal"]) + 1 == len(h["fault"]) + 1
        assert sum(h["normal"]) > 0
    rul = doc["evaluation"]["rul"]
    assert len(rul["truth"]) == len(rul["predicted"]) > 10
    assert "rul_rmse" in doc["provenance"]["metrics"] and doc["sha256"]


def test_a_report_without_recorded_errors_and_unknown_versions(demo_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    copy_without_evaluation(demo_root / "press-02" / "7.5kW" / "1.0.0", root)
    c = _client(root)
    doc = c.get(f"{API}/bundles/press-02/7.5kW/1.0.0/report").json()
    assert doc["evaluation"] is None and doc["provenance"]["metrics"]
    missing = c.get(f"{API}/bundles/press-02/7.5kW/9.9.9/report")
    assert missing.status_code == 404 and "9.9.9" in missing.json()["message"]
    assert c.get(f"{API}/bundles/no-such/7.5kW/1.0.0/report").status_code == 404


def test_deployments_without_serve_say_so(demo_root: Path) -> None:
    body = _client(demo_root).get(f"{API}/deployments").json()
    assert body == {"app": "in-process", "deployments": {}}


def test_the_favicon_is_no_content_rather_than_an_error(demo_root: Path) -> None:
    r = _client(demo_root).get("/favicon.ico")
    assert r.status_code == 204 and not r.content
