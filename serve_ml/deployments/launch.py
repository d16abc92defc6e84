"""Start and stop a local Ray instance running the serve-ml application.

Shared by ``serve-ml up``, the integration-test fixture and the benchmarks, so all
three run the same graph the same way. Ray Serve's fast paths are switched on
through environment flags that Ray reads when each process starts, so they are set
here, before ``ray.init``.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from serve_ml.core.http import API_PREFIX
from serve_ml.core.ports import free_port
from serve_ml.core.settings import PACKAGE_DIR, SECRET_FIELDS, Settings
from serve_ml.deployments.app import AppArgs, build_graph, dedicated_equipment
from serve_ml.deployments.live_gateway import (
    LIVE_APP_NAME,
    LIVE_READY_PATH,
    LIVE_ROUTE_PREFIX,
    LiveArgs,
    build_live_graph,
)
from serve_ml.deployments.loopback import SETUP_HOOK, SINGLE_MACHINE_ENV, loopback_env, single_machine

log = logging.getLogger("serve_ml.launch")
APP_NAME = "serve-ml"
SERVE_CONFIG = PACKAGE_DIR / "deployments" / "serve_config.yaml"


def port_owner(port: int) -> psutil.Process | None:
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            return psutil.Process(conn.pid)
    return None


RAY_TOKEN_FILE = "ray-auth-token"
# Ray Serve's HAProxy puts its admin socket (``mode 666 level admin``: anyone who can
# reach it can reconfigure or stop the ingress), config and state files in
# /tmp/haproxy-serve by default, a directory any local user can enter. They go into
# a private directory instead; short, because a Unix socket path holds 107 bytes and
# Ray adds a 56-character node id below it.
_HAPROXY_PATHS = {"RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock", "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",
                  "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "", "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
                  "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock"}


def ray_token_path(settings: Settings) -> Path:
    """Where ``serve-ml up`` keeps the token of the local Ray cluster it starts."""
    return settings.state_dir / RAY_TOKEN_FILE


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, from the first byte on
    (a chmod after the write would leave a window where others can read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def new_ray_token(settings: Settings) -> Path:
    """A fresh Ray auth token for this start, in a 0600 file; returns its path."""
    path = ray_token_path(settings)
    write_private(path, secrets.token_hex(32))
    return path


def ray_client_env(token_path: Path) -> dict[str, str]:
    """What a process needs in its environment to join a cluster started with that token."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)}


def join_env(settings: Settings) -> dict[str, str]:
    """What a process on this machine needs in its environment to join the local
    cluster a start made with ``settings``: the token, and on a loopback cluster Ray's
    single-machine mode (otherwise the client looks for its node on the host's
    outward address and never finds it)."""
    env = ray_client_env(ray_token_path(settings)) if settings.ray_auth else {"RAY_AUTH_MODE": "disabled"}
    if settings.ray_loopback:
        env.update(SINGLE_MACHINE_ENV)
    return env


def join_local(env: dict[str, str]) -> None:
    """Set up this process to join a local cluster with ``join_env``'s environment."""
    os.environ.update(env)
    single_machine(all(env.get(k) == v for k, v in SINGLE_MACHINE_ENV.items()))
    reload_ray_auth()


def ray_env(settings: Settings, haproxy_dir: Path | None = None) -> dict[str, str]:
    """Environment for the Ray processes a local start launches (they inherit it).
    ``haproxy_dir`` is the private directory of HAProxy's files.

    Joining ``settings.ray_address`` changes nothing: that cluster's own set-up
    decides its authentication (``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN_PATH`` of the
    caller)."""
    env: dict[str, str] = {}
    if settings.ray_address is None:
        env.update(ray_client_env(ray_token_path(settings)) if settings.ray_auth else {"RAY_AUTH_MODE": "disabled"})
        if haproxy_dir is not None:
            env.update({k: str(haproxy_dir / name) if name else str(haproxy_dir) for k, name in _HAPROXY_PATHS.items()})
            if settings.ray_loopback:
                env.update(loopback_env(haproxy_dir))
        env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = f"{settings.ingress_drain_s:g}"
    if settings.haproxy:
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    if settings.throughput_optimized:
        env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    return env


def reload_ray_auth() -> None:
    """Make this process read the auth mode and token again. Ray caches both on
    first use (importing Ray Serve is enough), so a process that imported Ray before
    the environment was set, or that started an earlier cluster with another token,
    would otherwise connect to its own GCS with the stale ones."""
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _config_args(path: Path, name: str) -> dict[str, Any] | None:
    """The ``args`` of application ``name`` in a Serve config file (None: no such application)."""
    cfg = yaml.safe_load(path.read_text())
    app = next((a for a in cfg["applications"] if a["name"] == name), None)
    return None if app is None else app.get("args") or {}


def app_args_from_config(path: Path = SERVE_CONFIG, **overrides: Any) -> AppArgs:
    """The ``args`` of the serve-ml application in ``serve_config.yaml``, with overrides."""
    args = _config_args(path, APP_NAME)
    if args is None:
        raise ValueError(f"{path}: no application named {APP_NAME!r}")
    return AppArgs.model_validate({**args, **overrides})


def live_args_from_config(path: Path = SERVE_CONFIG) -> LiveArgs:
    """The ``args`` of the live (WebSocket) application in ``serve_config.yaml``
    (its defaults when the file has none)."""
    return LiveArgs.model_validate(_config_args(path, LIVE_APP_NAME) or {})


@dataclass
class RunningCluster:
    http_url: str
    http_port: int
    metrics_port: int
    dashboard_url: str | None
    gcs_address: str
    started_s: float
    ray_token_file: Path | None = None
    """The token a client needs to join (``ray_client_env``); None when auth is off."""
    client_env: dict[str, str] | None = None
    """What a client on this machine needs to join (``join_env``); None for a joined cluster."""
    private_dir: Path | None = None
    """HAProxy's admin socket and files (mode 0700), removed at stop."""

    def gcs_reachable(self, timeout_s: float = 1.0) -> bool:
        host, port = self.gcs_address.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=timeout_s).close()
            return True
        except OSError:
            return False

    def stop(self, gcs_alive: bool | None = None) -> None:
        """``gcs_alive``: the caller's own verdict on Ray's GCS (None: probe it here)."""
        import ray
        from ray import serve

        try:
            # A signal sent to the whole process group (`timeout`, systemd, a supervisor)
            # reaches Ray's own processes too. Against a dead GCS, serve.shutdown() blocks
            # for 60 s and then Ray aborts this process, so nothing after it would run.
            if self.gcs_reachable() if gcs_alive is None else gcs_alive:
                serve.shutdown()
            else:
                log.warning("Ray's GCS at %s is gone; skipping Ray Serve's shutdown", self.gcs_address)
        finally:
            ray.shutdown()
            single_machine(False)
        # ray.shutdown() can leave HAProxy holding the HTTP port (see the shared notes);
        # it is ours because we chose that port free at start.
        owner = port_owner(self.http_port)
        if owner is not None and "haproxy" in owner.name():
            owner.terminate()
            try:
                owner.wait(5)
            except psutil.TimeoutExpired:
                owner.kill()
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)


def wait_http_ready(base_url: str, timeout_s: float = 120.0, *, live_app: bool = False) -> None:
    """Block until ``GET {base_url}/api/v1/serve-ml/health/ready`` answers 200 and, with
    ``live_app`` (a Serve deployment of both applications), the proxy routes the
    WebSocket prefix to the live application: until it does, sockets would land on the
    HTTP ingress and hold its slots. A single-process API (``deployments.local``)
    serves its sockets itself and has no live application to wait for."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    urls = [f"{base_url}{API_PREFIX}/health/ready"]
    if live_app:
        urls.append(f"{base_url}{LIVE_ROUTE_PREFIX}{LIVE_READY_PATH}")
    for url in urls:
        while time.monotonic() < deadline:
            try:
                r = httpx.get(url, timeout=2)
                if r.status_code == 200:
                    break
                last = f"HTTP {r.status_code} from {url}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__} from {url}"
            time.sleep(0.3)
        else:
            raise TimeoutError(f"{base_url} not ready within {timeout_s:g} s (last: {last})")


def start_cluster(
    settings: Settings,
    app_args: AppArgs,
    *,
    http_port: int | None = None,
    metrics_port: int | None = None,
    dashboard: bool = False,
    dashboard_port: int = 8265,
    num_cpus: int | None = None,
) -> RunningCluster:
    """Start Ray (or join ``settings.ray_address``), then Serve, then the app; wait until it is ready."""
    import ray
    from ray import serve
    from ray.serve.api import RunTarget

    private_dir = None
    if settings.ray_address is None:
        if settings.ray_auth:
            new_ray_token(settings)
        private_dir = Path(tempfile.mkdtemp(prefix="serve-ml-"))  # mode 0700
    os.environ.update(ray_env(settings, private_dir))
    loopback = settings.ray_address is None and settings.ray_loopback
    single_machine(loopback)
    reload_ray_auth()
    http_port = http_port or settings.http_port
    metrics_port = metrics_port or free_port()
    t0 = time.monotonic()
    try:
        if settings.ray_address:
            ctx = ray.init(address=settings.ray_address, namespace="serve")
        else:
            runtime_env = {"worker_process_setup_hook": SETUP_HOOK} if loopback else None
            ctx = ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_port=dashboard_port,
                           _node_ip_address="127.0.0.1", _metrics_export_port=metrics_port,
                           namespace="serve", log_to_driver=False, runtime_env=runtime_env)
        _restore_live_state(settings)
        serve.start(http_options={"host": settings.http_host, "port": http_port})
        # Both applications in one call, so the live application's replica starts beside
        # the scoring graph's instead of after them.
        serve.run_many([RunTarget(build_graph(app_args, settings), name=APP_NAME, route_prefix="/"),
                        RunTarget(build_live_graph(live_args_from_config(), settings), name=LIVE_APP_NAME,
                                  route_prefix=LIVE_ROUTE_PREFIX)])
        register_recipe(settings, app_args)
        # serve.run_many returns once the deployments are RUNNING; the proxy (HAProxy above
        # all) learns the route a moment later, and on a loaded machine that moment is
        # seconds. Until then a request gets 404 or a refused connection.
        wait_http_ready(f"http://{settings.http_host}:{http_port}", live_app=True)
    except BaseException:
        ray.shutdown()
        single_machine(False)  # a later start in this process may not want it
        if private_dir is not None:
            shutil.rmtree(private_dir, ignore_errors=True)
        raise
    started = time.monotonic() - t0
    return RunningCluster(
        http_url=f"http://{settings.http_host}:{http_port}", http_port=http_port, metrics_port=metrics_port,
        dashboard_url=ctx.dashboard_url and f"http://{ctx.dashboard_url}", gcs_address=ctx.address_info["gcs_address"],  # type: ignore[attr-defined]
        started_s=started, ray_token_file=ray_token_path(settings) if settings.ray_address is None and
        settings.ray_auth else None, private_dir=private_dir,
        client_env=join_env(settings) if settings.ray_address is None else None,
    )


def _restore_live_state(settings: Settings) -> None:
    """Create the control plane on this cluster's database (it loads the pins and
    history persisted by earlier runs itself) and record the catalog it implies."""
    if settings.database_url is None:
        return
    import asyncio

    import ray

    from serve_ml.bundles.catalog import Catalog
    from serve_ml.scoring.control import get_control
    from serve_ml.scoring.history import History, record_catalog

    _, overrides = ray.get(get_control(settings.database_url).state.remote())

    async def record() -> None:
        history = History(settings.database_url)
        try:
            await record_catalog(history, Catalog.scan(settings.root, live_overrides=overrides))
        finally:
            await history.close()

    asyncio.run(record())


def apply_scaling(settings: Settings, app_args: AppArgs, equipment_id: str, scaling: Any) -> AppArgs:
    """Change one equipment deployment's autoscaling in place (Ray must be connected).

    Only options change, so Serve updates the running deployment without
    restarting replicas and without reloading any bundle.
    """
    from ray import serve

    args = app_args.model_copy(update={"equipment": {**app_args.equipment, equipment_id: scaling}})
    serve.run(build_graph(args, settings), name=APP_NAME, route_prefix="/")
    register_recipe(settings, args)
    return args


def register_recipe(settings: Settings, app_args: AppArgs) -> None:
    """Tell the control plane how this graph was built, so a sync that adds or removes
    equipment can redeploy it (no secrets: replicas read tokens from their environment)."""
    import ray

    from serve_ml.scoring.control import get_control

    dedicated = dedicated_equipment(app_args, settings)
    dump = settings.model_dump(mode="json", exclude=set(SECRET_FIELDS))
    ray.get(get_control().set_recipe.remote(app_args.model_dump(mode="json"), dump, dedicated,
                                            "serve_ml.deployments.app", APP_NAME))
