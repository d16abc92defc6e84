"""What a running `serve-ml up` exposes to the network, tried as an attacker on the
same network would: which sockets listen where, and what answers without the Ray
token. Checked against the installed wheel's `up` (``tests/e2e/test_installed.py``),
the product as deployed."""

from __future__ import annotations

import ipaddress
import json
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import psutil


def loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    # a dual-stack socket bound to 127.0.0.1 shows as ::ffff:127.0.0.1
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def started_by(up: psutil.Process, extra_ports: set[int], pgdata: Path) -> list[psutil.Process]:
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


def listeners(pids: set[int]) -> list[tuple[str, int, int, str]]:
    out = []
    for conn in psutil.net_connections("inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                continue
            out.append((conn.laddr.ip, conn.laddr.port, conn.pid, name))
    return out


def check_exposure(up_pid: int, env: dict[str, str], state_dir: Path) -> Path:
    """Assert that the `up` of ``up_pid`` (started with ``env``, state in ``state_dir``)
    listens on loopback only and that Ray and its dashboard refuse callers without the
    token; returns HAProxy's private directory, which must be gone once `up` stops."""
    port = int(env["SERVE_ML_HTTP_PORT"])
    state = json.loads((state_dir / "state.json").read_text())
    token_file = Path(state["ray_auth_token_file"])
    # Both files are the owner's only; the state file holds no database URL with a password.
    for f in (token_file, state_dir / "state.json"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert "ray-auth-token" in token_file.name and len(token_file.read_text()) >= 32
    assert "settings" not in state

    kafka_port = int(state["stream"]["kafka_bootstrap"].rsplit(":", 1)[1])
    procs = started_by(psutil.Process(up_pid), {kafka_port}, state_dir / "pgdata")
    assert any("postgres" in p.name() for p in procs), "the embedded PostgreSQL was not found"
    found = listeners({p.pid for p in procs})
    exposed = [(ip, p, name) for ip, p, _pid, name in found if not loopback(ip)]
    print(f"listeners: {len(found)}, on loopback: {len(found) - len(exposed)}, beyond it: {exposed}")
    ours = {port, kafka_port, int(env["SERVE_ML_DASHBOARD_PORT"])}
    assert all(loopback(ip) for ip, p, _pid, _n in found if p in ours), found
    assert {p for _ip, p, _pid, _n in found} >= ours
    # Ray's own (GCS, raylet, workers, agents, HAProxy's stats and metrics, the
    # replicas' gRPC) included: nothing of what `up` started listens beyond loopback.
    assert not exposed, exposed
    assert any(name == "haproxy" for _ip, _p, _pid, name in found), found
    # HAProxy's admin socket (mode 666, level admin) sits in a directory only the owner can enter.
    admin = [Path(c) for p in procs if p.name() == "haproxy"
             for c in p.cmdline() if c.endswith((".cfg", ".cfg.loopback"))]
    assert admin, "no HAProxy config found"
    private = admin[0].parent
    while not private.name.startswith("serve-ml-"):
        private = private.parent
    assert stat.S_IMODE(private.stat().st_mode) == 0o700, private
    assert "stats socket " + str(private) in admin[0].read_text()

    # Without the token, even on this machine: Ray refuses the driver, the dashboard the Jobs API.
    client_env = state["ray_client_env"]
    assert client_env["RAY_AUTH_TOKEN_PATH"] == str(token_file), client_env
    no_token = {**{k: v for k, v in env.items() if not k.startswith("RAY_AUTH")},
                **{k: v for k, v in client_env.items() if not k.startswith("RAY_AUTH")}}
    join = [sys.executable, "-c", f"import ray; ray.init(address={state['ray_gcs_address']!r}); print('JOINED')"]
    joined = subprocess.run(join, env=no_token, capture_output=True, text=True, timeout=120)
    assert joined.returncode != 0 and "JOINED" not in joined.stdout, joined.stdout
    assert "token" in joined.stderr.lower(), joined.stderr[-2000:]
    jobs = f"{state['dashboard_url']}/api/jobs/"
    assert httpx.get(jobs, timeout=10).status_code in (401, 403)
    assert httpx.get(jobs, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code in (401, 403)
    authed = httpx.get(jobs, headers={"Authorization": f"Bearer {token_file.read_text()}"}, timeout=10)
    assert authed.status_code == 200, authed.text[:300]
    # With the token, a client joins (what `serve-ml scale` does).
    joined = subprocess.run(join, env={**no_token, **client_env}, capture_output=True, text=True, timeout=120)
    assert "JOINED" in joined.stdout, joined.stderr[-2000:]
    return private
