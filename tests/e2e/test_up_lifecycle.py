"""One `serve-ml up` through its life. A new user's README path (status, predict,
sync, activate); Ray restarting a killed control plane and scorer with the pin held;
the whole stack restarted (`serve-ml down`, then `serve-ml up` on the same state
directory) with live versions, pins and open alerts as they were; the ecosystem's
clients against it (bearer JWTs from an identity provider's JWKS with their roles and
the audit trail, the real ``tritonclient`` over OIP v2, a librdkafka producer feeding
the stream, one trace across ingress -> equipment replica exported over OTLP,
schemathesis with every check through HAProxy and the Serve ingress); and that second
`up` stopped the way supervisors stop it, by a signal to its whole process group. One stack for all of it:
each `up` costs most of a minute. Starts its own cluster (marker ``own_cluster``: a
pytest process apart from the shared cluster's)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import orjson
import psutil
import pytest
import tritonclient.http as triton
from confluent_kafka import Producer

from serve_ml.cli.state import STOP_REQUEST_FILE
from serve_ml.deployments.launch import port_owner
from tests.conftest import build_sim_bundle
from tests.e2e.conftest import FEATURES, cli, cli_env, start_up, stop_process_tree, stop_up, wait_for
from tests.fuzzkit import schemathesis_run, unexplained_failures
from tests.jwtkit import AUDIENCE, ISSUER, bearer, write_jwks
from tests.otlpkit import Receiver, start_receiver
from tests.samples import sim_rows
from tests.streamkit import report

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.own_cluster]
CLIENT_TRACE, CLIENT_SPAN = "5c0ffee0ddba11ad5c0ffee0ddba11ad", "1234567890abcdef"
# reads are not open once a JWT issuer is configured: this file's own reads go as the admin
ADMIN = {"Authorization": "Bearer e2e-admin-token-01"}


def snapshot(api: str) -> tuple[dict, set[int]]:
    bundles = httpx.get(f"{api}/bundles", headers=ADMIN, timeout=30).json()["bundles"]
    live = {(b["equipment_id"], b["power"]): (b["model_version"], b["pinned"]) for b in bundles if b["live"]}
    alerts = httpx.get(f"{api}/alerts", params={"status": "open"}, headers=ADMIN, timeout=30).json()["alerts"]
    return live, {a["id"] for a in alerts}


def restart_actor(env: dict[str, str], name: str) -> dict:
    """Kill a named actor of the running system and let Ray restart it, from a driver
    of its own (with the cluster token); the control plane's generation before and after."""
    state = json.loads((Path(env["SERVE_ML_STATE_DIR"]) / "state.json").read_text())
    script = f"""
import json, time, ray
ray.init(address={state["ray_gcs_address"]!r}, log_to_driver=False)
control = ray.get_actor("serve-ml-control", namespace="serve-ml")
before = ray.get(control.state.remote())[0]
ray.kill(ray.get_actor({name!r}, namespace="serve-ml"), no_restart=False)
deadline = time.monotonic() + 60
while True:
    try:
        after = ray.get(ray.get_actor("serve-ml-control", namespace="serve-ml").state.remote(), timeout=5)[0]
        restore = ray.get(ray.get_actor("serve-ml-control", namespace="serve-ml").restore_status.remote(), timeout=5)
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.5)
print(json.dumps({{"generation_before": before, "generation_after": after, "restore": restore}}))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**env, **state["ray_client_env"]})
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def scored_since(api: str, eq: str, since: dt.datetime) -> list[str]:
    rows = httpx.get(f"{api}/equipment/{eq}/predictions", params={"start": since.isoformat(), "limit": 1000},
                     headers=ADMIN, timeout=30).json()["predictions"]
    return [r["model_version"] for r in rows]


def test_up_serves_every_client_then_restarts_keeping_live_versions_pins_and_open_alerts(tmp_path: Path) -> None:
    """The README path and actor restarts, then the whole stack restarted on the same
    state directory, which serves the ecosystem's clients (:func:`ecosystem_clients`)
    and is then stopped by a signal to its process group
    (:func:`signal_the_group_and_expect_everything_stopped`)."""
    otlp, receiver = start_receiver()
    env = {**cli_env(tmp_path), "SERVE_ML_SIMULATE_MACHINES": "pump-03:5.5kW:overstrain,press-02:7.5kW:normal",
           "SERVE_ML_SIMULATE_RATE_HZ": "5", "SERVE_ML_ALERT_RESOLVE_AFTER": "1000",
           "SERVE_ML_JWT_JWKS_FILE": str(write_jwks(tmp_path / "jwks.json")), "SERVE_ML_JWT_ISSUER": ISSUER,
           "SERVE_ML_JWT_AUDIENCE": AUDIENCE, "SERVE_ML_OTLP_ENDPOINT": otlp}
    assert env["SERVE_ML_ADMIN_TOKEN"] == ADMIN["Authorization"].split()[1]
    build_sim_bundle(Path(env["SERVE_ML_ROOT"]), "press-02", "7.5kW", "1.1.0", power_range_kw=(5.5, 100.0))
    port, log = int(env["SERVE_ML_HTTP_PORT"]), tmp_path / "up.log"
    api = f"http://127.0.0.1:{port}/api/v1/serve-ml"
    proc = start_up(env, log)
    try:
        # The README path first: status, predict, sync, activate.
        status = json.loads(cli(env, "status", "--json").stdout)
        assert status["running"] is True and status["http_url"].endswith(f":{port}")
        assert status["root"] == env["SERVE_ML_ROOT"] and "serve-ml is up" in log.read_text()
        assert status["storage_mode"] == "postgres-partitioned" and "in-memory" in status["kafka"]
        out = cli(env, "predict", "press-02", *FEATURES)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["power"] == "7.5kW"
        sync = cli(env, "sync")
        assert sync.returncode == 0 and json.loads(sync.stdout)["unchanged"], sync.stdout + sync.stderr
        assert snapshot(api)[0][("press-02", "7.5kW")] == ("1.1.0", False)  # newest is live by default
        act = cli(env, "bundle", "activate", "press-02", "7.5kW", "1.0.0", "--reason", "restart test")
        assert act.returncode == 0 and json.loads(act.stdout)["pinned"] is True, act.stdout + act.stderr
        wait_for(lambda: snapshot(api)[1], 90, "an open alert from the overstrained pump")
        wait_for(lambda: json.loads(cli(env, "status", "--json").stdout)["health"]["stream"] == "ok",
                 60, "stream healthy")
        # Ray restarts a killed control plane or scorer by itself: the pin must hold in both.
        restart = restart_actor(env, "serve-ml-control")
        assert restart["generation_after"] > restart["generation_before"], restart
        assert restart["restore"]["restored"] and restart["restore"]["overrides"] >= 1, restart
        time.sleep(3.0)  # every replica's watcher sees the new generation and reloads
        assert snapshot(api)[0][("press-02", "7.5kW")] == ("1.0.0", True)
        killed_at = dt.datetime.now(dt.UTC)
        restart_actor(env, "serve-ml-stream-0")
        wait_for(lambda: len(scored_since(api, "press-02", killed_at)) >= 10, 90, "press-02 scored after the restart")
        versions = Counter(scored_since(api, "press-02", killed_at))
        report("actor-restarts-keep-the-pin", control_restored=restart["restore"]["overrides"],
               scored_after_scorer_restart=dict(versions))
        assert set(versions) == {"1.0.0"}, versions
        live_before, alerts_before = snapshot(api)
        stop_up(env, proc)
        assert port_owner(port) is None, "something still listens on the HTTP port"
        assert not (Path(env["SERVE_ML_STATE_DIR"]) / STOP_REQUEST_FILE).exists(), "down's request outlived the stop"
        assert cli(env, "status", "--json").returncode == 3
        restarted_at = log.stat().st_size
        proc = start_up(env, log, own_session=True)  # its own process group, to signal all of it
        live_after, alerts_after = snapshot(api)
        report("whole-stack-restart", live_before=len(live_before), live_kept=sum(
            live_after.get(k) == v for k, v in live_before.items()), open_alerts_before=len(alerts_before),
            open_alerts_kept=len(alerts_before & alerts_after))
        assert live_after == live_before
        assert live_after[("press-02", "7.5kW")] == ("1.0.0", True)
        assert alerts_before <= alerts_after, (alerts_before, alerts_after)
        # last, since schemathesis changes what it finds (it unpins and clears with the ids it reads)
        with log.open() as f:
            f.seek(restarted_at)
            ecosystem_clients(env, f.read(), tmp_path)
        signal_the_group_and_expect_everything_stopped(env, proc, log, restarted_at)
    finally:
        stop_process_tree(proc, port)
        receiver.shutdown()
        receiver.server_close()


def signal_the_group_and_expect_everything_stopped(env: dict[str, str], proc: subprocess.Popen, log: Path,
                                                   log_from: int) -> None:
    """`timeout`, systemd and most supervisors signal the whole process group, which
    reaches Ray's own processes as well as `serve-ml up`. The embedded PostgreSQL, the
    broker and HAProxy run in sessions of their own and survive that signal, so `up` must
    stop them itself, without waiting on the Ray that died beside it. ``proc`` leads a
    session of its own; ``log_from``: where its part of ``log`` begins."""
    port = int(env["SERVE_ML_HTTP_PORT"])
    leftovers: list[psutil.Process] = []
    try:
        state = json.loads((Path(env["SERVE_ML_STATE_DIR"]) / "state.json").read_text())
        kafka_port = int(state["stream"]["kafka_bootstrap"].rsplit(":", 1)[1])
        pgdata = str(Path(env["SERVE_ML_STATE_DIR"]) / "pgdata")
        postgres = [p for p in psutil.process_iter(["cmdline"]) if pgdata in " ".join(p.info["cmdline"] or [])]
        broker, haproxy = port_owner(kafka_port), port_owner(port)
        assert postgres and broker is not None and haproxy is not None
        leftovers = [*postgres, broker, haproxy]
        os.killpg(proc.pid, signal.SIGTERM)
        # well inside the 60 s serve.shutdown() spent on a dead GCS before Ray aborted `up`
        assert proc.wait(50) == 0, log.read_text()[-2000:]
        gone, alive = psutil.wait_procs(leftovers, timeout=10)
        assert not alive, f"still running after `up` exited: {[p.pid for p in alive]}"
        assert port_owner(port) is None and port_owner(kafka_port) is None
        with log.open() as f:
            f.seek(log_from)
            assert "stopped." in f.read()
    finally:
        for p in leftovers:  # by PID, only what this test's `up` started
            if p.is_running():
                p.kill()


def ecosystem_clients(env: dict[str, str], banner: str, tmp_path: Path) -> None:
    """The ecosystem's clients against the running `up` (``banner``: what it printed):
    JWT roles and the audit trail, tritonclient in JSON and binary, confluent-kafka
    feeding the stream, one trace from the caller to the equipment replica, and
    schemathesis through HAProxy."""
    port = env["SERVE_ML_HTTP_PORT"]
    api = f"http://127.0.0.1:{port}/api/v1/serve-ml"
    bootstrap = re.search(r"^\s*kafka\s+(\S+)", banner, re.M)
    topic = re.search(r"^\s*topics\s+readings (\S+),", banner, re.M)
    assert bootstrap and topic, banner[-2000:]
    viewer, admin = bearer("viewer", sub="vic@factory"), bearer("admin", alg="ES256", kid="ec-1", sub="ada@factory")
    http = httpx.Client(base_url=api, timeout=60)

    # Roles from the identity provider's tokens, and who did what in the audit trail.
    assert http.get("/equipment", headers=viewer).status_code == 200
    refused = http.post("/sync", headers=viewer)
    assert refused.status_code == 403, refused.text
    assert http.post("/sync", headers=admin).status_code == 200
    # an audit row is written after its answer went out (edge._audit): wait for it, briefly
    want, seen, deadline = {("jwt:vic@factory", 403), ("jwt:ada@factory", 200)}, set(), time.monotonic() + 15
    while not want <= seen and time.monotonic() < deadline:
        seen = {(e["subject"], e["status"]) for e in http.get(
            "/audit", headers=admin, params={"path_prefix": "/api/v1/serve-ml/sync"}).json()["entries"]}
        time.sleep(0.3)
    assert want <= seen, seen
    assert http.get("/audit", headers=viewer).status_code == 403

    # tritonclient, JSON and binary tensors, with the viewer's token.
    client = triton.InferenceServerClient(url=f"127.0.0.1:{port}", network_timeout=60.0)
    try:
        assert client.is_server_live() and client.is_model_ready("press-02", headers=dict(viewer))
        # one [n, features] tensor, named by no feature: read in the metadata's input order
        order = [i["name"] for i in client.get_model_metadata("press-02", headers=dict(viewer))["inputs"]]
        rows = sim_rows("normal", 40, "7.5kW") + sim_rows("overstrain", 40, "7.5kW")
        matrix = np.asarray([[r[f] for f in order] for r in rows])
        own = http.post("/predict/columns", headers=viewer, json={
            "equipment_id": "press-02", "power": "7.5kW",
            "columns": {f: matrix[:, j].tolist() for j, f in enumerate(order)}}).json()
        for binary in (False, True):
            tensor = triton.InferInput("readings", list(matrix.shape), "FP64")
            tensor.set_data_from_numpy(matrix, binary_data=binary)
            res = client.infer("press-02", [tensor], headers=dict(viewer), parameters={"power": "7.5kW"},
                               outputs=[triton.InferRequestedOutput("score", binary_data=binary)])
            np.testing.assert_allclose(res.as_numpy("score"), own["score"])
    finally:
        client.close()

    # confluent-kafka (librdkafka) feeding the stream: every reading stored once.
    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=40, microseconds=secrets.randbelow(10**6))
    produced = sim_rows("normal", 50, "7.5kW", seed=23)
    times = [t0 + dt.timedelta(milliseconds=10 * i, microseconds=3) for i in range(len(produced))]
    producer = Producer({"bootstrap.servers": bootstrap.group(1), "acks": "all", "linger.ms": 5})
    for ts, features in zip(times, produced, strict=True):
        producer.produce(topic.group(1), key=b"press-02", value=orjson.dumps(
            {"equipment_id": "press-02", "ts": ts.isoformat(), "power": "7.5kW", "features": features}))
    assert producer.flush(60) == 0
    window = {"start": t0.isoformat(), "end": (t0 + dt.timedelta(seconds=2)).isoformat(), "limit": 1000}
    deadline, stored = time.monotonic() + 90, []
    while time.monotonic() < deadline and len(stored) < len(times):
        stored = http.get("/equipment/press-02/readings", headers=viewer, params=window).json()["readings"]
        time.sleep(1)
    assert len(stored) == len(times), (len(stored), banner[-2000:])

    # One trace from the caller through the ingress to the equipment replica: a
    # columnar request above columns_fast_path_max_rows is scored there.
    rows = sim_rows("normal", 5000, "7.5kW", seed=29)
    cols = {f: [r[f] for r in rows] for f in rows[0]}
    traced = http.post("/predict/columns", json={"equipment_id": "press-02", "power": "7.5kW", "columns": cols},
                       headers={**viewer, "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
    assert traced.status_code == 200, traced.text
    assert traced.headers["traceparent"].split("-")[1] == CLIENT_TRACE
    deadline, names = time.monotonic() + 60, {}
    while time.monotonic() < deadline and len(names) < 2:
        names = {s.name: svc for svc, s in Receiver.spans if s.trace_id.hex() == CLIENT_TRACE
                 and s.name in ("POST /api/v1/serve-ml/predict/columns", "equipment.score_columns")}
        time.sleep(1)
    assert names == {"POST /api/v1/serve-ml/predict/columns": "serve-ml-ingress",
                     "equipment.score_columns": "serve-ml-equipment"}, \
        sorted({(svc, s.name, s.trace_id.hex()[:8]) for svc, s in Receiver.spans})[:40]

    # schemathesis with every check, through HAProxy and the Serve ingress.
    report = schemathesis_run(f"http://127.0.0.1:{port}", env["SERVE_ML_ADMIN_TOKEN"], tmp_path, examples=5)
    unexplained = unexplained_failures(report)
    assert not unexplained, (sorted(unexplained), report[-6000:])
    assert http.get("/health/live").status_code == 200
    http.close()
