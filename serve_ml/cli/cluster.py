"""``serve-ml up|down|status|predict``: run the system and talk to it."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from serve_ml.cli.state import admin_request, alive, read_state, state_path, stop_request_path
from serve_ml.core.settings import Settings

if TYPE_CHECKING:
    from serve_ml.deployments.launch import RunningCluster


def register(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser("up", help="start the serving cluster (Ctrl-C or `serve-ml down` stops it)")
    up.add_argument("--port", type=int, help="HTTP port (default SERVE_ML_HTTP_PORT)")
    up.add_argument("--no-stream", action="store_true", help="serving only: no database, broker or stream")
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="stop what `serve-ml up` started")
    down.add_argument("--timeout-s", type=float, default=90.0)
    down.set_defaults(func=_down)
    st = sub.add_parser("status", help="where the running system is and how healthy it is")
    st.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    st.set_defaults(func=_status)
    sy = sub.add_parser("sync", help="rescan the bundle root of the running system (needs the admin token)")
    sy.add_argument("--url")
    sy.set_defaults(func=_sync)
    pr = sub.add_parser("predict", help="score one reading over HTTP")
    pr.add_argument("equipment_id")
    pr.add_argument("features", nargs="+", metavar="NAME=VALUE")
    pr.add_argument("--power")
    pr.add_argument("--model-version")
    pr.add_argument("--url", help="server URL (default: from `serve-ml status`)")
    pr.set_defaults(func=_predict)



def _up(args: argparse.Namespace) -> int:
    from serve_ml.deployments.launch import app_args_from_config, start_cluster, write_private

    settings = args.settings
    running = read_state(settings)
    if running:
        print(f"serve-ml is already running (pid {running['pid']}) at {running['http_url']}", file=sys.stderr)
        return 1
    root = settings.root
    if not root.is_dir() or not any(p for p in root.iterdir() if not p.name.startswith(".")):
        from serve_ml.bundles.demo import build_demo  # the trainer's imports, only when it trains

        print(f"bundle root {root} is empty: building the demo bundles", flush=True)
        build_demo(root)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    stop_request_path(settings).unlink(missing_ok=True)
    stack = None
    if not args.no_stream:
        from serve_ml.pipelines.stack import start_stack

        if settings.simulate_rate_hz > 0 and settings.notifications_file is None:
            from serve_ml.core.ports import free_port
            from serve_ml.operations.demo import write_demo_sinks

            settings = settings.model_copy(update={
                "notifications_file": write_demo_sinks(settings.state_dir, free_port())})

        print("starting PostgreSQL and Kafka (embedded unless DATABASE_URL / KAFKA_BOOTSTRAP)...", flush=True)
        stack = start_stack(settings, actors=False)
        settings = settings.model_copy(update={"database_url": stack.database_url,
                                               "kafka_bootstrap": stack.bootstrap})
        stack.settings = settings
    print(f"starting Ray and Ray Serve (HAProxy ingress: {settings.haproxy}, "
          f"throughput-optimised: {settings.throughput_optimized})...", flush=True)
    app_args = app_args_from_config()
    try:
        cluster = start_cluster(settings, app_args, http_port=args.port,
                                metrics_port=settings.metrics_port, dashboard=True,
                                dashboard_port=settings.dashboard_port)
    except BaseException:
        if stack:
            stack.stop()
        raise
    sim_stop = threading.Event()
    if stack:
        _seed_operations(settings, stack.database_url)
        stack.start_actors()
        _start_simulator(settings, stack.bootstrap, sim_stop)
    state: dict[str, Any] = {"pid": os.getpid(), "http_url": cluster.http_url, "root": str(root),
             "metrics_url": f"http://127.0.0.1:{cluster.metrics_port}/metrics",
             "dashboard_url": cluster.dashboard_url, "ray_gcs_address": cluster.gcs_address,
             "started_at": time.time(), "startup_s": round(cluster.started_s, 2),
             "stream": stack.describe() if stack else None,
             "ray_auth_token_file": str(cluster.ray_token_file) if cluster.ray_token_file else None,
             # what a client on this machine needs to join (no secret: the token stays in its file)
             "ray_client_env": cluster.client_env,
             # what `serve-ml scale` redeploys (the settings come from the control plane,
             # so no database URL is written here)
             "app_args": app_args.model_dump(mode="json")}
    write_private(state_path(settings), json.dumps(state, indent=2))
    api = f"{cluster.http_url}/api/v1/serve-ml"
    print(f"""
serve-ml is up in {cluster.started_s:.1f}s
  predict   POST {api}/predict
  bulk      POST {api}/predict/bulk
  bundles   GET  {api}/bundles
  sync      POST {api}/sync
  docs      {cluster.http_url}/docs
  metrics   {state['metrics_url']}   (Prometheus; names start with ray_serve_ml_)
  dashboard {cluster.dashboard_url}{_auth_line(cluster.ray_token_file, cluster.client_env)}
  bundles root {root}{_stream_lines(state["stream"], settings, api)}
Try:  curl -s {api}/bundles | head -c 400
Stop: Ctrl-C or `serve-ml down`
""", flush=True)
    stop = {"flag": False}

    def _handler(signum: int, _frame: Any) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    try:
        while not stop["flag"]:
            time.sleep(0.5)
            if stack:
                try:
                    stack.supervise_broker()
                except Exception as exc:  # keep serving; try again on the next tick
                    print(f"could not restart the embedded broker: {exc}", file=sys.stderr, flush=True)
    finally:
        drain = "its own drain period" if settings.ray_address else f"{settings.ingress_drain_s:g} s"
        print(f"stopping serve-ml (the ingress drains for {drain}, then Ray, the broker and PostgreSQL stop)...",
              flush=True)
        sim_stop.set()
        try:
            # `serve-ml down` signals this process only, so Ray's GCS got no signal and one
            # probe tells; any other stop may have signalled the whole group, the GCS too.
            targeted = stop_request_path(settings).exists()
            ray_alive = cluster.gcs_reachable(0.5) if targeted else _gcs_survives(cluster)
            if stack and ray_alive:  # else the actors died with Ray (see RunningCluster.stop)
                stack.stop_actors()
            cluster.stop(gcs_alive=ray_alive)
        finally:
            if stack:  # PostgreSQL and the broker do not depend on Ray: stop them whatever happened to it
                stack.stop()
            state_path(settings).unlink(missing_ok=True)
            stop_request_path(settings).unlink(missing_ok=True)
        print("stopped.")
    return 0


def _gcs_survives(cluster: RunningCluster, grace_s: float = 3.0) -> bool:
    """Whether Ray's GCS is still up a moment after the stop signal. A signal sent to
    the whole process group reaches the GCS too, and one on its way out can still
    accept a connection: a single probe then sends the shutdown into a GCS that dies
    under it, which blocks for 60 s before Ray aborts this process."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not cluster.gcs_reachable(0.5):
            return False
        time.sleep(0.25)
    return True


def _auth_line(token_file: Path | None, client_env: dict[str, str] | None) -> str:
    exports = " ".join(f"{k}={v}" for k, v in (client_env or {}).items())
    join = f"\n            export {exports}" if exports else ""
    if token_file is None:
        return ("\n  ray auth  OFF (SERVE_ML_RAY_AUTH=false): anyone who reaches Ray's ports can run code in it"
                + (f"; to join:{join}" if join else ""))
    return f"\n  ray auth  token in {token_file} (mode 0600); for `serve status`, `ray job submit`:{join}"


def _stream_lines(stream: dict[str, Any] | None, settings: Settings, api: str) -> str:
    if not stream:
        return "\n  stream    off (--no-stream)"
    topics = stream["topics"]
    sim = settings.simulate_machines if settings.simulate_rate_hz > 0 else "off"
    return f"""
  database  {stream['database_url']}  ({stream['database']}, storage mode: {stream['storage_mode']})
  kafka     {stream['kafka_bootstrap']}  ({stream['kafka']})
  topics    readings {topics['features']}, alerts {topics['alerts']}, dead letters {topics['dead_letter']}
  simulator {sim} at {settings.simulate_rate_hz:g} readings/s per machine
  stream    GET {api}/stream/health, {api}/alerts, {api}/equipment/<id>/predictions
  status    GET {api}/status, {api}/locations, {api}/equipment, {api}/equipment/<id>/aggregates
  alarms    GET {api}/alarms, {api}/alarms/<id>; POST .../ack, .../clear (operator token)
  thresholds GET/PUT/DELETE {api}/thresholds, GET {api}/thresholds/history
  live      ws://{api.split("://", 1)[1]}/ws/equipment/<id>, ws://{api.split("://", 1)[1]}/ws/alarms
  notify    GET {api}/notifications  (sinks: {settings.notifications_file or "none: SERVE_ML_NOTIFICATIONS_FILE"})"""


def _seed_operations(settings: Settings, database_url: str) -> None:
    """With the simulator on and an empty registry: the demo's equipment and thresholds."""
    if settings.simulate_rate_hz <= 0:
        return
    import asyncpg

    from serve_ml.operations.demo import seed_demo
    from serve_ml.pipelines.simulator import parse_machines

    async def go() -> bool:
        conn = await asyncpg.connect(database_url)
        try:
            return await seed_demo(conn, [m.equipment_id for m in parse_machines(settings.simulate_machines)])
        finally:
            await conn.close()

    if asyncio.run(go()):
        print("registered the simulated machines in two sites, with demo thresholds", flush=True)


def _start_simulator(settings: Settings, bootstrap: str, stop: threading.Event) -> None:
    if settings.simulate_rate_hz <= 0:
        return
    from serve_ml.pipelines.simulator import parse_machines, run_kafka

    machines = parse_machines(settings.simulate_machines)

    def loop() -> None:
        while not stop.is_set():
            try:
                asyncio.run(run_kafka(bootstrap, settings.features_topic, machines, settings.simulate_rate_hz,
                                      stop=stop.is_set))
            except Exception as exc:  # broker restarting: try again
                print(f"simulator: {exc}; retrying", file=sys.stderr, flush=True)
                stop.wait(1.0)

    threading.Thread(target=loop, name="simulator", daemon=True).start()


def _sync(args: argparse.Namespace) -> int:
    return admin_request(args.settings, "POST", "/sync", args.url)


def _down(args: argparse.Namespace) -> int:
    settings = args.settings
    state = read_state(settings)
    if state is None:
        print("serve-ml is not running")
        return 0
    stop_request_path(settings).write_text(str(os.getpid()))
    os.kill(state["pid"], signal.SIGTERM)
    deadline = time.monotonic() + args.timeout_s
    while time.monotonic() < deadline:
        if not alive(state["pid"]):
            print("stopped.")
            return 0
        time.sleep(0.5)
    print(f"pid {state['pid']} did not stop within {args.timeout_s}s", file=sys.stderr)
    return 1


def _read_auth(settings: Settings) -> dict[str, str]:
    """A token that may read, when reads need one: the read token, else the admin's."""
    token = settings.read_token.get_secret_value() if settings.read_token else settings.admin_secret()
    return {"Authorization": f"Bearer {token}"} if token else {}


def collect_status(settings: Settings) -> dict[str, Any]:
    state = read_state(settings)
    out: dict[str, Any] = {"running": state is not None, "root": str(settings.root)}
    if state is None:
        out["health"] = {"ingress": "down"}
        return out
    out.update({k: state[k] for k in ("pid", "http_url", "metrics_url", "dashboard_url", "ray_gcs_address")})
    if state.get("stream"):
        out.update(state["stream"])
    api = f"{state['http_url']}/api/v1/serve-ml"
    health: dict[str, Any] = {}
    try:
        with httpx.Client(timeout=5, headers=_read_auth(settings)) as c:
            r = c.get(f"{api}/health/ready")
            health["ingress"] = r.json().get("status", "unknown")
            health["deployments_unavailable"] = r.json().get("unavailable_deployments", [])
            bundles = c.get(f"{api}/bundles").json()["bundles"]
            out["live"] = [{k: b[k] for k in ("equipment_id", "power", "model_version")}
                           for b in bundles if b["live"]]
            if state.get("stream"):
                sh = c.get(f"{api}/stream/health").json()
                health["stream"] = sh["status"]
                out["stream_actors"] = sh["actors"]
                out["stream_lag"] = sum(a.get("lag") or 0 for a in sh["actors"].values())
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        health["ingress"] = f"unreachable: {type(exc).__name__}"
    out["health"] = health
    return out


def _status(args: argparse.Namespace) -> int:
    st = collect_status(args.settings)
    if args.json:
        print(json.dumps(st))
    else:
        print(f"running: {st['running']}")
        for k, v in st.items():
            if k != "running":
                print(f"  {k}: {v if not isinstance(v, list) else json.dumps(v)}")
    return 0 if st["running"] else 3


def _predict(args: argparse.Namespace) -> int:
    url = args.url or (read_state(args.settings) or {}).get("http_url")
    if not url:
        print("serve-ml is not running; start it with `make up` or pass --url", file=sys.stderr)
        return 1
    feats = {}
    for kv in args.features:
        name, _, value = kv.partition("=")
        try:
            feats[name] = float(value)
        except ValueError:
            print(f"feature {name!r}: {value!r} is not a number", file=sys.stderr)
            return 2
    body = {"equipment_id": args.equipment_id, "features": feats, "power": args.power,
            "model_version": args.model_version}
    r = httpx.post(f"{url}/api/v1/serve-ml/predict", json=body, headers=_read_auth(args.settings), timeout=30)
    print(json.dumps(r.json(), indent=2))
    return 0 if r.status_code == 200 else 1

