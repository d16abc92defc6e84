"""Session fixtures for the integration and fault suites: one real local Ray instance
serving a private copy of the demo bundles on free ports, and the stream stack
(embedded PostgreSQL, Tansu, Mosquitto, Ray actors). Torn down with
serve.shutdown()/ray.shutdown() and by PID."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serve_ml.core.ports import free_port
from serve_ml.core.settings import Settings
from serve_ml.deployments.launch import RunningCluster, app_args_from_config, start_cluster
from serve_ml.pipelines.stack import Stack, start_stack
from tests.conftest import DEMO_ROOT

API = "/api/v1/serve-ml"
ADMIN_TOKEN = "integration-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="session")
def serve_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve") / "root"
    shutil.copytree(DEMO_ROOT, root)
    return root


@pytest.fixture(scope="session")
def cluster(serve_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    # Replicas read the token from their own environment, inherited from this process
    # when Ray starts; take it out again so it cannot leak into other tests.
    os.environ["SERVE_ML_ADMIN_TOKEN"] = ADMIN_TOKEN
    settings = Settings(root=serve_root, state_dir=tmp_path_factory.mktemp("ray"), http_port=free_port(),
                        max_bulk_rows=2000,
                        max_request_bytes=4 * 1024 * 1024)
    args = app_args_from_config(root=str(serve_root), poll_interval_s=0.3)
    try:
        running = start_cluster(settings, args, metrics_port=free_port(), num_cpus=2)
    finally:
        del os.environ["SERVE_ML_ADMIN_TOKEN"]
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def http(cluster: RunningCluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.http_url + API, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = tmp_path_factory.mktemp("mqtt") / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    assert proc.poll() is None, "mosquitto did not start (make test installs it)"
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def stack(cluster, serve_root: Path, mosquitto: int) -> Iterator[Stack]:
    # Not under pytest's basetemp: the embedded PostgreSQL runs as another user, so its
    # data directory's parents must stay traversable, and pytest makes its basetemp
    # private again whenever a pytest process starts (a restart of the server in a
    # fault test would then be refused).
    state_dir = Path(tempfile.mkdtemp(prefix="serve-ml-test-state-"))
    s = Settings(root=serve_root, state_dir=state_dir, batch_wait_ms=50,
                 alert_resolve_after=5, mqtt_url=f"mqtt://127.0.0.1:{mosquitto}", stream_consumers=1)
    st = start_stack(s)
    try:
        yield st
    finally:
        st.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def replica_actors(app: str, deployment: str = "") -> list[dict]:
    """Live Serve replica actors (name, pid) of one deployment, or of a whole app when
    ``deployment`` is empty. Read from the GCS: the test cluster runs without the
    dashboard that ray.util.state needs."""
    import ray

    prefix = f"SERVE_REPLICA::{app}#{deployment}#" if deployment else f"SERVE_REPLICA::{app}#"
    return [{"name": a["Name"], "pid": a["Pid"]} for a in ray._private.state.actors().values()  # noqa: SLF001
            if a["State"] == "ALIVE" and a["Name"].startswith(prefix)]


def graph_settled(timeout_s: float = 180) -> dict:
    """Wait for the background redeploy a sync started (new or removed equipment);
    return the control plane's view and the app's deployments."""
    import ray
    from ray import serve

    from serve_ml.scoring.control import get_control

    control = get_control()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = ray.get(control.graph_status.remote())
        app = serve.status().applications["serve-ml"]
        if not status["redeploying"] and app.status == "RUNNING":
            return {**status, "deployments": sorted(app.deployments)}
        time.sleep(1.0)
    raise TimeoutError("the graph redeploy did not finish")
