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
from typing import Any

import httpx
import psutil

from serve_ml.settings import Settings

STATE_FILE = "state.json"


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


def state_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_FILE


def read_state(settings: Settings) -> dict[str, Any] | None:
    try:
        state = json.loads(state_path(settings).read_text())
    except (OSError, ValueError):
        return None
    return state if _alive(state.get("pid")) else None  # else stale: its writer is gone


def _alive(pid: Any) -> bool:
    """True if ``pid`` runs; a zombie (exited, not yet reaped by its parent) is not alive."""
    try:
        return psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, TypeError, ValueError):
        return False


def _up(args: argparse.Namespace) -> int:
    from bundles.demo import build_demo
    from deployments.launch import app_args_from_config, start_cluster, write_private

    settings = Settings()
    running = read_state(settings)
    if running:
        print(f"serve-ml is already running (pid {running['pid']}) at {running['http_url']}", file=sys.stderr)
        return 1
    root = settings.root
    if not root.is_dir() or not any(p for p in root.iterdir() if not p.name.startswith(".")):
        print(f"bundle root {root} is empty: building the demo bundles", flush=True)
        build_demo(root)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    stack = None
    if not args.no_stream:
        from pipelines.stack import start_stack

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
        stack.start_actors()
        _start_simulator(settings, stack.bootstrap, sim_stop)
    state = {"pid": os.getpid(), "http_url": cluster.http_url, "root": str(root),
             "metrics_url": f"http://127.0.0.1:{cluster.metrics_port}/metrics",
             "dashboard_url": cluster.dashboard_url, "ray_gcs_address": cluster.gcs_address,
             "started_at": time.time(), "startup_s": round(cluster.started_s, 2),
             "stream": stack.describe() if stack else None,
             "ray_auth_token_file": str(cluster.ray_token_file) if cluster.ray_token_file else None,
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
  dashboard {cluster.dashboard_url}{_auth_line(cluster.ray_token_file)}
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
        print("stopping serve-ml (Ray Serve drains ingress replicas; this can take ~30s)...", flush=True)
        sim_stop.set()
        try:
            if stack and cluster.gcs_reachable():  # else the actors died with Ray (see RunningCluster.stop)
                stack.stop_actors()
            cluster.stop()
        finally:
            if stack:  # PostgreSQL and the broker do not depend on Ray: stop them whatever happened to it
                stack.stop()
            state_path(settings).unlink(missing_ok=True)
        print("stopped.")
    return 0


def _auth_line(token_file: Path | None) -> str:
    if token_file is None:
        return "\n  ray auth  OFF (SERVE_ML_RAY_AUTH=false): anyone who reaches this host can run code in Ray"
    return (f"\n  ray auth  token in {token_file} (mode 0600); for `serve status`, `ray job submit`:\n"
            f"            export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={token_file}")


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
  stream    GET {api}/stream/health, {api}/alerts, {api}/equipment/<id>/predictions"""


def _start_simulator(settings: Settings, bootstrap: str, stop: threading.Event) -> None:
    if settings.simulate_rate_hz <= 0:
        return
    from pipelines.simulator import parse_machines, run_kafka

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
    from serve_ml.cli.bundle import admin_request

    return admin_request("POST", "/sync", args.url)


def _down(args: argparse.Namespace) -> int:
    settings = Settings()
    state = read_state(settings)
    if state is None:
        print("serve-ml is not running")
        return 0
    os.kill(state["pid"], signal.SIGTERM)
    deadline = time.monotonic() + args.timeout_s
    while time.monotonic() < deadline:
        if not _alive(state["pid"]):
            print("stopped.")
            return 0
        time.sleep(0.5)
    print(f"pid {state['pid']} did not stop within {args.timeout_s}s", file=sys.stderr)
    return 1


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
        with httpx.Client(timeout=5) as c:
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
    st = collect_status(Settings())
    if args.json:
        print(json.dumps(st))
    else:
        print(f"running: {st['running']}")
        for k, v in st.items():
            if k != "running":
                print(f"  {k}: {v if not isinstance(v, list) else json.dumps(v)}")
    return 0 if st["running"] else 3


def _predict(args: argparse.Namespace) -> int:
    url = args.url or (read_state(Settings()) or {}).get("http_url")
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
    r = httpx.post(f"{url}/api/v1/serve-ml/predict", json=body, timeout=30)
    print(json.dumps(r.json(), indent=2))
    return 0 if r.status_code == 200 else 1


def register_scale(sub: argparse._SubParsersAction) -> None:
    sc = sub.add_parser("scale", help="change one equipment deployment's autoscaling, in place")
    sc.add_argument("equipment_id")
    sc.add_argument("--min", type=int, dest="min_replicas", required=True)
    sc.add_argument("--max", type=int, dest="max_replicas", required=True)
    sc.add_argument("--target-ongoing-requests", type=float)
    sc.add_argument("--upscale-delay-s", type=float, default=5.0)
    sc.add_argument("--downscale-delay-s", type=float, default=60.0)
    sc.set_defaults(func=_scale)


def _scale(args: argparse.Namespace) -> int:
    import ray

    from deployments.launch import write_private

    from deployments.app import AppArgs, Autoscaling, dedicated_equipment
    from deployments.control import get_control
    from deployments.launch import apply_scaling, ray_client_env, reload_ray_auth

    state = read_state(Settings())
    if state is None or "app_args" not in state:
        print("serve-ml is not running (start it with `make up`)", file=sys.stderr)
        return 1
    app_args = AppArgs.model_validate(state["app_args"])
    scaling = Autoscaling(min_replicas=args.min_replicas, max_replicas=args.max_replicas,
                          target_ongoing_requests=args.target_ongoing_requests,
                          upscale_delay_s=args.upscale_delay_s, downscale_delay_s=args.downscale_delay_s)
    if state.get("ray_auth_token_file"):
        os.environ.update(ray_client_env(Path(state["ray_auth_token_file"])))
        reload_ray_auth()
    ray.init(address=state["ray_gcs_address"], namespace="serve", log_to_driver=False)
    try:
        recipe = ray.get(get_control().recipe.remote())
        if recipe is None:
            print("the running graph has no recipe to redeploy (deployed from a config file)", file=sys.stderr)
            return 1
        settings = Settings(**recipe["settings"])
        dedicated = dedicated_equipment(app_args, settings)
        if args.equipment_id not in dedicated:
            print(f"{args.equipment_id!r} has no dedicated deployment (dedicated: {', '.join(dedicated)}); "
                  "it is scored by the ingress, which scales with `ingress_autoscaling`", file=sys.stderr)
            return 2
        new_args = apply_scaling(settings, app_args, args.equipment_id, scaling)
    finally:
        ray.shutdown()  # disconnects this driver; the cluster keeps running
    state["app_args"] = new_args.model_dump(mode="json")
    write_private(state_path(Settings()), json.dumps(state, indent=2))
    print(f"equipment-{args.equipment_id}: min {args.min_replicas}, max {args.max_replicas} (applied in place)")
    return 0


def register_stream(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser("simulate", help="publish simulated sensor readings to Kafka or MQTT")
    sim.add_argument("--machines", help="equipment:power[:profile[:ai4i]],... (default SERVE_ML_SIMULATE_MACHINES)")
    sim.add_argument("--rate-hz", type=float, default=10.0, help="readings/s per machine (0: as fast as possible)")
    sim.add_argument("--count", type=int, help="stop after this many readings")
    sim.add_argument("--to", choices=("kafka", "mqtt"), default="kafka")
    sim.add_argument("--bootstrap", help="Kafka bootstrap (default: KAFKA_BOOTSTRAP or the running system's)")
    sim.add_argument("--mqtt-url", help="mqtt://host:port (default SERVE_ML_MQTT_URL)")
    sim.set_defaults(func=_simulate)
    db = sub.add_parser("db", help="database schema")
    dsub = db.add_subparsers(dest="db_command", required=True)
    mig = dsub.add_parser("migrate", help="apply pending migrations (DATABASE_URL or the running system's)")
    mig.set_defaults(func=_migrate)


def _simulate(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from pipelines.simulator import parse_machines, run_kafka, run_mqtt

    s = Settings()
    machines = parse_machines(args.machines or s.simulate_machines)
    if args.to == "mqtt":
        url = urlsplit(args.mqtt_url or s.mqtt_url or "mqtt://127.0.0.1:1883")
        sent = asyncio.run(run_mqtt(url.hostname or "127.0.0.1", url.port or 1883, machines, args.rate_hz,
                                    total=args.count))
    else:
        stream = (read_state(s) or {}).get("stream") or {}
        bootstrap = args.bootstrap or s.kafka_bootstrap or stream.get("kafka_bootstrap")
        if not bootstrap:
            print("no Kafka: pass --bootstrap, set KAFKA_BOOTSTRAP, or start the system with `make up`",
                  file=sys.stderr)
            return 1
        print(f"publishing to {bootstrap} topic {s.features_topic}: {', '.join(m.equipment_id for m in machines)}",
              flush=True)
        sent = asyncio.run(run_kafka(bootstrap, s.features_topic, machines, args.rate_hz, total=args.count))
    print(f"sent {sent} readings")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from pipelines.stack import prepare_database

    s = Settings()
    running = ((read_state(s) or {}).get("stream") or {}).get("database_url", "")
    url = s.database_url or (running if running and "***" not in running else None)
    if url is None:
        from pipelines.services import EmbeddedPostgres

        url = EmbeddedPostgres(s.state_dir / "pgdata").start()
    mode = asyncio.run(prepare_database(url, s))
    print(f"schema up to date; storage mode: {mode}")
    return 0
