"""`pip install` of the built wheel into a fresh virtualenv, run from a directory
outside the checkout: `serve-ml --version` and `serve-ml up` work on the defaults
alone (the demo bundles and the Serve config ship in the package; state goes to
$XDG_STATE_HOME, never into the checkout or the installed package). That `up`, the
product as deployed, is then tried as an attacker on the same network would try it
(``tests/exposurekit.py``): everything it started listens on loopback only, and Ray
and its dashboard refuse callers without the token.

The new virtualenv borrows this one's third-party packages through a .pth line
(installing torch and Ray again would take minutes and test PyPI, not us); serve-ml
itself comes only from the wheel. Starts its own cluster (marker ``own_cluster``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest

from serve_ml.core.ports import free_port
from serve_ml.core.settings import REPO_ROOT
from tests.e2e.conftest import stop_process_tree, wait_for
from tests.exposurekit import check_exposure

pytestmark = [pytest.mark.e2e, pytest.mark.own_cluster]


def test_the_wheel_installed_outside_the_checkout_runs_up_on_loopback_behind_the_ray_token(tmp_path: Path) -> None:
    wheels, venv, elsewhere = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO_ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("serve_ml-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], check=True, capture_output=True, text=True).stdout.strip())
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True, timeout=300)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVE_ML_", "VIRTUAL_ENV"))}
    env.update({"PATH": f"{venv / 'bin'}:{env.get('PATH', '')}", "XDG_STATE_HOME": str(tmp_path / "xdg"),
                "SERVE_ML_HTTP_PORT": str(port), "SERVE_ML_METRICS_PORT": str(free_port()),
                "SERVE_ML_DASHBOARD_PORT": str(free_port()), "SERVE_ML_SIMULATE_RATE_HZ": "2"})

    def run(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=timeout_s)

    where = run(str(venv / "bin" / "python"), "-c", "import json, serve_ml; from serve_ml.core.settings import "
                "Settings, in_checkout; s = Settings(); print(json.dumps([serve_ml.__file__, in_checkout(), "
                "str(s.root), str(s.state_dir)]))")
    assert where.returncode == 0, where.stderr
    module, checkout, root, state = json.loads(where.stdout)
    assert module.startswith(str(site)) and not checkout, (module, checkout)
    assert root.startswith(str(site)) and state == str(tmp_path / "xdg" / "serve-ml"), (root, state)
    version = run(str(venv / "bin" / "serve-ml"), "--version")
    assert version.returncode == 0 and version.stdout.startswith("serve-ml "), version.stderr

    log = (tmp_path / "up.log").open("w")
    proc = subprocess.Popen([str(venv / "bin" / "serve-ml"), "up"], cwd=elsewhere, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            status = run(str(venv / "bin" / "serve-ml"), "status", "--json")
            return json.loads(status.stdout)["health"]["ingress"] == "ready"
        try:
            wait_for(ready, 240, "serve-ml up ready")
        except TimeoutError:
            raise AssertionError((tmp_path / "up.log").read_text()[-3000:]) from None
        api = f"http://127.0.0.1:{port}/api/v1/serve-ml"
        bundles = httpx.get(f"{api}/bundles", timeout=30).json()["bundles"]
        assert {b["equipment_id"] for b in bundles} == {"mill-01", "press-02", "pump-03", "spindle-04"}
        verdict = httpx.post(f"{api}/predict", timeout=30, json={"equipment_id": "pump-03", "power": "5.5kW", "features": {
            "air_temp_k": 300.2, "process_temp_k": 310.1, "speed_rpm": 1500, "torque_nm": 30}})
        assert verdict.status_code == 200 and "score" in verdict.json(), verdict.text
        assert "serve-ml" in httpx.get(f"http://127.0.0.1:{port}/", timeout=30).text  # the portal ships too
        assert (tmp_path / "xdg" / "serve-ml" / "state.json").is_file()
        assert str(port) in json.loads((tmp_path / "xdg" / "serve-ml" / "state.json").read_text())["http_url"]
        private = check_exposure(proc.pid, env, tmp_path / "xdg" / "serve-ml")
        down = run(str(venv / "bin" / "serve-ml"), "down", timeout_s=180)
        assert down.returncode == 0 and "stopped" in down.stdout, down.stdout + down.stderr
        proc.wait(60)
        assert not private.exists(), "HAProxy's private directory outlived `up`"
    finally:
        log.close()
        stop_process_tree(proc, port)
