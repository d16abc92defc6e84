"""Session fixtures for the integration and fault suites: one real local Ray instance
serving a private copy of the demo bundles on free ports, and the stream stack
(embedded PostgreSQL, Tansu, Mosquitto, Ray actors). Torn down with
serve.shutdown()/ray.shutdown() and by PID."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller

from serve_ml.core.ports import free_port
from serve_ml.core.settings import Settings
from serve_ml.deployments.launch import RunningCluster, app_args_from_config, start_cluster
from serve_ml.pipelines.stack import Stack, start_stack
from tests.conftest import DEMO_ROOT, DENSE_FLEET

API = "/api/v1/serve-ml"
ADMIN_TOKEN = "integration-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="session")
def serve_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve") / "root"
    for eq in DENSE_FLEET:
        shutil.copytree(DEMO_ROOT / eq, root / eq)
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
    # One connection per request: a graph redeploy (any sync that adds or removes
    # equipment) reloads HAProxy, whose old worker closes its idle keep-alive
    # connections; a request sent on one as it closes is lost ("Server disconnected"),
    # which HTTP leaves to the client to retry (RFC 9112 §9.3.1) and httpx does not.
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=cluster.http_url + API, timeout=60, limits=limits) as c:
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


class Receivers:
    """A real HTTP server and a real SMTP server (aiosmtpd) on free ports, keeping what
    they receive: the notification sinks' far ends. Paths in ``failing`` answer 500."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.mails: list[Message] = []
        self.failing: set[str] = set()
        self.http_port = free_port()
        self.smtp_port = free_port()
        me = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                me.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                    "body": body})
                self.send_response(500 if self.path in me.failing else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        class Mailbox:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's naming)
                me.mails.append(message_from_bytes(envelope.content))
                return "250 OK"

        self.http = ThreadingHTTPServer(("127.0.0.1", self.http_port), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()
        self.smtp = Controller(Mailbox(), hostname="127.0.0.1", port=self.smtp_port)
        self.smtp.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.smtp.stop()


NOTIFY_SECRET = "test-signing-key-0123456789"


@pytest.fixture(scope="session")
def receivers() -> Iterator[Receivers]:
    r = Receivers()
    yield r
    r.stop()


def notifications_yaml(r: Receivers) -> str:
    """The stack's sinks: every test's alarms reach the first; the others are routed
    to the notification tests' own equipment and locations only."""
    return f"""
backoff_initial_s: 0.2
backoff_max_s: 1.0
fault_after_failures: 3
sinks:
  - name: all-webhook
    kind: webhook
    url: {r.url("/hook")}
    secret: {NOTIFY_SECRET}
  - name: site-slack
    kind: slack
    url: {r.url("/slack")}
    route: {{locations: [notify-site-a], events: [opened, acknowledged, resolved, cleared]}}
  - name: critical-mail
    kind: email
    host: 127.0.0.1
    port: {r.smtp_port}
    sender: serve-ml@factory.test
    to: [night-shift@factory.test]
    route: {{min_severity: critical, types: [threshold], locations: [notify-site-a]}}
  - name: flaky-cmms
    kind: webhook
    url: {r.url("/flaky")}
    secret: {NOTIFY_SECRET}
    route: {{locations: [notify-site-b]}}
"""


@pytest.fixture(scope="session")
def stack(cluster, serve_root: Path, mosquitto: int, receivers: Receivers) -> Iterator[Stack]:
    # Not under pytest's basetemp: the embedded PostgreSQL runs as another user, so its
    # data directory's parents must stay traversable, and pytest makes its basetemp
    # private again whenever a pytest process starts (a restart of the server in a
    # fault test would then be refused).
    state_dir = Path(tempfile.mkdtemp(prefix="serve-ml-test-state-"))
    notify = state_dir / "notifications.yaml"
    notify.write_text(notifications_yaml(receivers))
    s = Settings(root=serve_root, state_dir=state_dir, batch_wait_ms=50,
                 alert_resolve_after=5, mqtt_url=f"mqtt://127.0.0.1:{mosquitto}", stream_consumers=1,
                 notifications_file=notify)
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
            if status["last"] and not status["last"]["ok"]:
                raise AssertionError(f"the graph redeploy failed: {status['last']}")
            return {**status, "deployments": sorted(app.deployments)}
        time.sleep(1.0)
    raise TimeoutError("the graph redeploy did not finish")


def graph_quiet(timeout_s: float = 180) -> None:
    """Wait until the graph is settled and no replica of it is still draining.

    A replaced replica lives on for Serve's drain window, and still rescans the
    bundle root when the generation moves: a test that writes a new bundle then
    expects a sync to report it must not race a late rescan in a replica the
    previous test's redeploy left behind."""
    from ray import serve

    graph_settled(timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app = serve.status().applications["serve-ml"]
        running = {name: d.replica_states.get("RUNNING", 0) for name, d in app.deployments.items()}
        alive = Counter(a["name"].split("#")[1] for a in replica_actors("serve-ml"))
        if all(alive[name] <= n for name, n in running.items()):
            return
        time.sleep(1.0)
    raise TimeoutError("replicas of an earlier graph are still draining")
