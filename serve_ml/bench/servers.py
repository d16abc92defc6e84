"""Servers under test for the benchmarks, each in its own process(es)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from serve_ml.core.ports import free_port
from serve_ml.core.settings import Settings
from serve_ml.deployments.app import AppArgs
from serve_ml.deployments.launch import RunningCluster, app_args_from_config, start_cluster

API = "/api/v1/serve-ml"


def wait_ready(base: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}{API}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{base} not ready within {timeout_s}s")


@contextmanager
def uvicorn_baseline(root: Path) -> Iterator[str]:
    """Plain uvicorn + FastAPI, one process, no Ray: the same API and scoring code."""
    port = free_port()
    env = {**os.environ, "SERVE_ML_ROOT": str(root)}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "serve_ml.deployments.local:create_local_app",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                             "--no-access-log"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, 60)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def serve_cluster(root: Path, args: AppArgs | None = None, *, max_bulk_rows: int = 10_000) -> Iterator[RunningCluster]:
    settings = Settings(root=root, http_port=free_port(), max_bulk_rows=max_bulk_rows)
    cluster = start_cluster(settings, args or app_args_from_config(root=str(root)), metrics_port=free_port())
    try:
        wait_ready(cluster.http_url)
        yield cluster
    finally:
        cluster.stop()
