"""`serve run serve_config.yaml` over real HTTP, both of its applications.
(`serve-ml up`, status, predict, sync, activate and down are driven by
tests/e2e/test_up_lifecycle.py, which then restarts the whole stack.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from serve_ml.core.ports import free_port
from serve_ml.core.settings import REPO_ROOT, Settings
from tests.e2e.conftest import BIN, FEATURES, cli_env, stop_process_tree, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.own_cluster]


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


def test_serve_run_serve_config(env: dict[str, str], tmp_path: Path) -> None:
    """`serve run serve_config.yaml` (with only the port changed) serves the app."""
    port = free_port()
    cfg = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text())
    cfg["http_options"]["port"] = port
    (tmp_path / "serve_config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**env, "RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
           "RAY_AUTH_MODE": "disabled", "RAY_DASHBOARD_PORT": env["SERVE_ML_DASHBOARD_PORT"],
           # Ray's 30 s ingress drain is for remote load balancers; drain as `serve-ml up` does
           "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": f"{Settings.model_fields['ingress_drain_s'].default:g}"}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([str(BIN / "serve"), "run", str(tmp_path / "serve_config.yaml")], env=env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    url = f"http://127.0.0.1:{port}/api/v1/serve-ml"
    try:
        wait_for(lambda: httpx.get(f"{url}/health/ready", timeout=5).status_code == 200, 180, "serve run ready")
        feats = dict((k, float(v)) for k, v in (f.split("=") for f in FEATURES))
        r = httpx.post(f"{url}/predict", json={"equipment_id": "pump-03", "features": feats}, timeout=30)
        assert r.status_code == 200 and r.json()["equipment_id"] == "pump-03"
        # the second application of the file: the WebSockets, mounted below the API
        wait_for(lambda: httpx.get(f"{url}/ws/-/ready", timeout=5).status_code == 200, 60, "live application routed")
        assert httpx.get(f"{url}/ws/-/ready", timeout=5).json()["application"] == "serve-ml-live"
    finally:
        stop_process_tree(proc, port)
        log.close()
