"""Helpers for e2e tests: real subprocesses, free ports, cleanup by PID."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from serve_ml.core.ports import free_port
from tests.conftest import DEMO_ROOT

BIN = Path(sys.executable).parent
FEATURES = ["air_temp_k=300.2", "process_temp_k=310.1", "speed_rpm=1500", "torque_nm=41",
            "tool_wear_min=30", "vibration_rms_mm_s=1.4", "current_a=11.4"]


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(1)
    raise TimeoutError(f"{what} not reached within {timeout_s}s")


def stop_process_tree(proc: subprocess.Popen, port: int, timeout_s: float = 90) -> None:
    """SIGINT (as Ctrl-C), then make sure nothing we started holds the port."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait(30)
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            os.kill(conn.pid, signal.SIGKILL)  # a leftover HAProxy on a port this test chose


def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a private `serve-ml up`: a copy of the demo root, free ports."""
    root = tmp_path / "root"
    if not root.exists():
        shutil.copytree(DEMO_ROOT, root)
    return {**os.environ, "SERVE_ML_ROOT": str(root), "SERVE_ML_STATE_DIR": str(tmp_path / "state"),
            "SERVE_ML_HTTP_PORT": str(free_port()), "SERVE_ML_METRICS_PORT": str(free_port()),
            "SERVE_ML_DASHBOARD_PORT": str(free_port()), "SERVE_ML_ADMIN_TOKEN": "e2e-admin-token-01"}


def cli(env: dict[str, str], *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "serve-ml"), *args], env=env, capture_output=True, text=True, timeout=timeout_s)


def start_up(env: dict[str, str], log: Path, *, own_session: bool = False) -> subprocess.Popen:
    out = log.open("a")
    proc = subprocess.Popen([str(BIN / "serve-ml"), "up"], env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=own_session)
    out.close()
    try:
        wait_for(lambda: json.loads(cli(env, "status", "--json").stdout)["health"]["ingress"] == "ready",
                 180, "serve-ml up ready")
    except BaseException:  # the caller's cleanup never sees a process that did not come up
        stop_process_tree(proc, int(env["SERVE_ML_HTTP_PORT"]))
        raise
    return proc


def stop_up(env: dict[str, str], proc: subprocess.Popen) -> None:
    down = cli(env, "down")
    assert down.returncode == 0 and "stopped" in down.stdout, down.stdout + down.stderr
    proc.wait(60)
