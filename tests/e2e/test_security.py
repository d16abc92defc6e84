"""What a `serve-ml up` exposes to the network, tried as an attacker on the same
network would: which sockets listen where, and what answers without the Ray token.
Starts its own cluster (marker ``own_cluster``)."""

from __future__ import annotations

import ipaddress
import json
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import cli_env, start_up, stop_process_tree, stop_up

pytestmark = [pytest.mark.e2e, pytest.mark.own_cluster]

# Ray 2.60 binds these on every interface with no option to narrow them; each one
# checks the cluster token (GCS, raylet, object manager, core workers, the Serve
# replicas' gRPC) or serves read-only metrics (HAProxy's stats page and Prometheus
# exporter, the metrics agent). Anything else on a non-loopback address fails.
# `serve-ml` is `up` itself, a Ray driver with a core worker of its own.
RAY_PROCESSES = ("gcs_server", "raylet", "ray::", "haproxy", "python", "serve-ml")


def _loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip.split("%")[0]).is_loopback


def _started_by(up: psutil.Process, extra_ports: set[int], pgdata: Path) -> list[psutil.Process]:
    """`up` and everything it started: its descendants, and the services that
    daemonise away from it (PostgreSQL, found by its data directory; the broker, by port)."""
    procs = {p.pid: p for p in [up, *up.children(recursive=True)]}
    for p in psutil.process_iter(["cmdline"]):
        if str(pgdata) in " ".join(p.info["cmdline"] or []):
            procs.setdefault(p.pid, p)
    for conn in psutil.net_connections("inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid and conn.laddr.port in extra_ports:
            procs.setdefault(conn.pid, psutil.Process(conn.pid))
    return list(procs.values())


def _listeners(pids: set[int]) -> list[tuple[str, int, int, str]]:
    out = []
    for conn in psutil.net_connections("inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                continue
            out.append((conn.laddr.ip, conn.laddr.port, conn.pid, name))
    return out


def test_up_requires_the_ray_token_and_binds_its_own_listeners_to_loopback(tmp_path: Path) -> None:
    env = {**cli_env(tmp_path), "SERVE_ML_SIMULATE_RATE_HZ": "0"}
    port, log = int(env["SERVE_ML_HTTP_PORT"]), tmp_path / "up.log"
    state_dir = Path(env["SERVE_ML_STATE_DIR"])
    proc = start_up(env, log)
    try:
        state = json.loads((state_dir / "state.json").read_text())
        token_file = Path(state["ray_auth_token_file"])
        # Both files are the owner's only; the state file holds no database URL with a password.
        for f in (token_file, state_dir / "state.json"):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert "ray-auth-token" in token_file.name and len(token_file.read_text()) >= 32
        assert "settings" not in state

        kafka_port = int(state["stream"]["kafka_bootstrap"].rsplit(":", 1)[1])
        procs = _started_by(psutil.Process(proc.pid), {kafka_port}, state_dir / "pgdata")
        assert any("postgres" in p.name() for p in procs), "the embedded PostgreSQL was not found"
        listeners = _listeners({p.pid for p in procs})
        exposed = [(ip, p, name) for ip, p, _pid, name in listeners if not _loopback(ip)]
        print(f"listeners: {len(listeners)}, on loopback: {len(listeners) - len(exposed)}, beyond it: {exposed}")
        ours = {port, kafka_port, int(env["SERVE_ML_DASHBOARD_PORT"])}
        assert all(_loopback(ip) for ip, p, _pid, _n in listeners if p in ours), listeners
        assert {p for _ip, p, _pid, _n in listeners} >= ours
        assert not [e for e in exposed if not e[2].startswith(RAY_PROCESSES)], exposed
        # HAProxy's admin socket (mode 666, level admin) sits in a directory only the owner can enter.
        admin = [Path(c) for p in procs if p.name() == "haproxy"
                 for c in p.cmdline() if c.endswith(".cfg")]
        assert admin, "no HAProxy config found"
        private = admin[0].parent
        while not private.name.startswith("serve-ml-"):
            private = private.parent
        assert stat.S_IMODE(private.stat().st_mode) == 0o700, private
        assert "stats socket " + str(private) in admin[0].read_text()

        # Without the token: Ray refuses the driver, the dashboard refuses the Jobs API.
        no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
        joined = subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address={state['ray_gcs_address']!r}); print('JOINED')"],
            env=no_token, capture_output=True, text=True, timeout=120)
        assert joined.returncode != 0 and "JOINED" not in joined.stdout, joined.stdout
        assert "token" in joined.stderr.lower(), joined.stderr[-2000:]
        jobs = f"{state['dashboard_url']}/api/jobs/"
        assert httpx.get(jobs, timeout=10).status_code in (401, 403)
        assert httpx.get(jobs, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code in (401, 403)
        authed = httpx.get(jobs, headers={"Authorization": f"Bearer {token_file.read_text()}"}, timeout=10)
        assert authed.status_code == 200, authed.text[:300]
        # With the token, a client joins (what `serve-ml scale` does).
        with_token = {**no_token, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
        joined = subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address={state['ray_gcs_address']!r}); print('JOINED')"],
            env=with_token, capture_output=True, text=True, timeout=120)
        assert "JOINED" in joined.stdout, joined.stderr[-2000:]
        stop_up(env, proc)
        assert not private.exists(), "HAProxy's private directory outlived `up`"
    finally:
        stop_process_tree(proc, port)
