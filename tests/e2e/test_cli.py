"""The README path, as a new user runs it: `serve-ml up`, `status --json`,
`predict`, `down`; and `serve run serve_config.yaml`, over real HTTP."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from deployments.launch import free_port, port_owner
from serve_ml.settings import REPO_ROOT
from tests.e2e.conftest import BIN, cli, cli_env, stop_process_tree, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.own_cluster]
FEATURES = ["air_temp_k=300.2", "process_temp_k=310.1", "speed_rpm=1500", "torque_nm=41",
            "tool_wear_min=30", "vibration_rms_mm_s=1.4", "current_a=11.4"]


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


def test_up_status_predict_down(env: dict[str, str], tmp_path: Path) -> None:
    port = int(env["SERVE_ML_HTTP_PORT"])
    log = (tmp_path / "up.log").open("w")
    proc = subprocess.Popen([str(BIN / "serve-ml"), "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: json.loads(cli(env, "status", "--json").stdout)["health"]["ingress"] == "ready",
                 180, "serve-ml up ready")
        status = json.loads(cli(env, "status", "--json").stdout)
        assert status["running"] is True and status["http_url"].endswith(f":{port}")
        assert status["root"] == env["SERVE_ML_ROOT"]
        assert {"equipment_id": "press-02", "power": "7.5kW", "model_version": "1.0.0"} in status["live"]
        out = cli(env, "predict", "press-02", *FEATURES)
        assert out.returncode == 0, out.stderr
        verdict = json.loads(out.stdout)
        assert verdict["power"] == "7.5kW" and verdict["anomaly"] is False
        assert "serve-ml is up" in (tmp_path / "up.log").read_text()
        sync = cli(env, "sync")
        assert sync.returncode == 0 and json.loads(sync.stdout)["unchanged"], sync.stdout + sync.stderr
        act = cli(env, "bundle", "activate", "press-02", "7.5kW", "1.0.0", "--reason", "e2e")
        assert act.returncode == 0 and json.loads(act.stdout)["pinned"] is True, act.stdout + act.stderr
        wait_for(lambda: json.loads(cli(env, "status", "--json").stdout)["health"]["stream"] == "ok",
                 60, "stream healthy")
        stream = json.loads(cli(env, "status", "--json").stdout)
        assert stream["storage_mode"] == "postgres-partitioned" and stream["health"]["stream"] == "ok"
        assert "in-memory" in stream["kafka"]
        down = cli(env, "down")
        assert down.returncode == 0 and "stopped" in down.stdout
        proc.wait(30)
        assert port_owner(port) is None, "something still listens on the HTTP port"
        assert cli(env, "status", "--json").returncode == 3
    finally:
        stop_process_tree(proc, port)
        log.close()


def test_serve_run_serve_config(env: dict[str, str], tmp_path: Path) -> None:
    """`serve run serve_config.yaml` (with only the port changed) serves the app."""
    port = free_port()
    cfg = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text())
    cfg["http_options"]["port"] = port
    (tmp_path / "serve_config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**env, "RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
           "RAY_AUTH_MODE": "disabled", "RAY_DASHBOARD_PORT": env["SERVE_ML_DASHBOARD_PORT"]}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([str(BIN / "serve"), "run", str(tmp_path / "serve_config.yaml")], env=env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    url = f"http://127.0.0.1:{port}/api/v1/serve-ml"
    try:
        wait_for(lambda: httpx.get(f"{url}/health/ready", timeout=5).status_code == 200, 180, "serve run ready")
        feats = dict((k, float(v)) for k, v in (f.split("=") for f in FEATURES))
        r = httpx.post(f"{url}/predict", json={"equipment_id": "pump-03", "features": feats}, timeout=30)
        assert r.status_code == 200 and r.json()["equipment_id"] == "pump-03"
    finally:
        stop_process_tree(proc, port)
        log.close()
