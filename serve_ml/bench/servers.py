"""Servers under test for the benchmarks, each in its own process(es)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serve_ml.core.ports import free_port
from serve_ml.core.settings import Settings
from serve_ml.deployments.app import AppArgs
from serve_ml.deployments.launch import RunningCluster, app_args_from_config, start_cluster, wait_http_ready

API = "/api/v1/serve-ml"


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
        wait_http_ready(base, 60)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def serve_cluster(root: Path, args: AppArgs | None = None, *, max_bulk_rows: int = 10_000) -> Iterator[RunningCluster]:
    settings = Settings(root=root, http_port=free_port(), max_bulk_rows=max_bulk_rows)
    cluster = start_cluster(settings, args or app_args_from_config(root=str(root)), metrics_port=free_port())
    try:
        yield cluster
    finally:
        cluster.stop()
