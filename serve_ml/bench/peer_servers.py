"""The peers of ``bench peers``, each installed from PyPI into a virtualenv of its own
and run as its own process tree.

A peer's virtualenv holds its framework (pinned: the figures name versions) and the
model core's requirements at the versions serve-ml itself runs (torch, xgboost,
numpy), so the model maths is the same everywhere. serve-ml's model core
(``serve_ml.core``, ``serve_ml.bundles`` and the peer apps) is copied fresh into the
bench's state directory on every run and put on the peers' ``PYTHONPATH``: no peer
can import the rest of serve-ml (Ray, the API), and no peer runs stale code.

Virtualenvs are kept between runs under ``<state>/bench-peers/`` and rebuilt when
their requirements change (a stamp file holds them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import httpx

from serve_ml.core.ports import free_port

# MLServer 1.7.1's inference workers call asyncio.get_event_loop() in a fresh process,
# which uvloop >= 0.22 refuses ("no current event loop"): every worker dies at start
# and parallel_workers > 0 never gets ready. uvloop 0.21 still allows it.
PEER_VERSIONS = {"fastapi": ("fastapi==0.165.0", "uvicorn[standard]==0.55.0"), "litserve": ("litserve==0.2.19",),
                 "bentoml": ("bentoml==1.4.40",), "mlserver": ("mlserver==1.7.1", "uvloop==0.21.0")}
"""What each peer's virtualenv installs besides the model core's requirements."""
APPS = "serve_ml.bench.peer_apps"


def core_requirements() -> list[str]:
    """The model core's requirements, pinned to the versions this serve-ml runs."""
    return ["torch==2.13.0", f"xgboost-cpu=={version('xgboost-cpu')}", f"numpy=={version('numpy')}", "orjson",
            "packaging", "pydantic>=2"]


@dataclass
class PeerEnv:
    name: str
    path: Path
    requirements: list[str] = field(default_factory=list)

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def ready(self) -> bool:
        stamp = self.path / "serve-ml-requirements.json"
        return self.python.exists() and stamp.exists() and json.loads(stamp.read_text()) == self.requirements

    def build(self) -> str:
        """Create the virtualenv and install into it; returns a one-line account."""
        if self.ready():
            return f"{self.name}: reused {self.path}"
        t0 = time.monotonic()
        shutil.rmtree(self.path, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(self.path)], check=True)
        # torch first, alone: no other requirement can then pull a CUDA build of it.
        for reqs in (["torch==2.13.0"], self.requirements):
            out = subprocess.run([str(self.python), "-m", "pip", "install", "--quiet", *reqs],
                                 capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(f"installing {self.name} ({' '.join(reqs)}) failed:\n{out.stderr[-2000:]}")
        (self.path / "serve-ml-requirements.json").write_text(json.dumps(self.requirements))
        return f"{self.name}: installed in {time.monotonic() - t0:.0f}s"


def build_envs(state_dir: Path, names: Sequence[str]) -> list[PeerEnv]:
    """Every peer's virtualenv, built concurrently (pip spends most of its time waiting)."""
    envs = [PeerEnv(n, state_dir / "bench-peers" / n, [*core_requirements(), *PEER_VERSIONS[n]]) for n in names]
    with ThreadPoolExecutor(len(envs)) as pool:
        for line in pool.map(PeerEnv.build, envs):
            print(f"  {line}", flush=True)
    return envs


def copy_model_core(state_dir: Path) -> Path:
    """serve-ml's model core and the peer apps, and nothing else of serve-ml."""
    package = Path(__file__).resolve().parents[1]
    dest = state_dir / "bench-peers" / "model-core"
    shutil.rmtree(dest, ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__", "demo_bundles")
    (dest / "serve_ml" / "bench").mkdir(parents=True)
    shutil.copy2(package / "__init__.py", dest / "serve_ml" / "__init__.py")
    shutil.copy2(package / "bench" / "__init__.py", dest / "serve_ml" / "bench" / "__init__.py")
    for sub in ("core", "bundles", "bench/peer_apps"):
        shutil.copytree(package / sub, dest / "serve_ml" / sub, ignore=skip)
    return dest


@dataclass
class RunningPeer:
    name: str
    base: str
    proc: subprocess.Popen[bytes]
    log: Path


def _launch(env: PeerEnv, work: Path, root: Path, workers: int) -> tuple[list[str], str, str]:
    """The command, base URL and readiness path of one peer, with ``workers`` worker
    processes the way its documentation scales one."""
    port = free_port()
    bin_dir = env.path / "bin"
    if env.name == "fastapi":
        cmd = [str(env.python), "-m", "uvicorn", f"{APPS}.fastapi_app:app", "--host", "127.0.0.1", "--port",
               str(port), "--log-level", "warning", "--no-access-log", "--workers", str(workers)]
        return cmd, f"http://127.0.0.1:{port}", "/health"
    if env.name == "litserve":
        cmd = [str(env.python), "-m", f"{APPS}.litserve_app", str(port), str(workers)]
        return cmd, f"http://127.0.0.1:{port}", "/health"
    if env.name == "bentoml":
        cmd = [str(bin_dir / "bentoml"), "serve", f"{APPS}.bentoml_service:PeerScorer", "--host", "127.0.0.1",
               "--port", str(port)]
        return cmd, f"http://127.0.0.1:{port}", "/readyz"
    if env.name == "mlserver":
        repo = work / "mlserver"
        (repo / "press-02").mkdir(parents=True, exist_ok=True)
        # One worker: inference in the server process (parallel_workers 0), since
        # MLServer's default (1) adds a hop to a worker process per request and buys
        # nothing. More: its pool of inference processes behind the one HTTP server.
        (repo / "settings.json").write_text(json.dumps({
            "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
            "parallel_workers": 0 if workers == 1 else workers, "debug": False}))
        (repo / "press-02" / "model-settings.json").write_text(json.dumps({
            "name": "press-02", "implementation": f"{APPS}.mlserver_runtime.PeerRuntime",
            "parameters": {"uri": str(root)}}))
        return [str(bin_dir / "mlserver"), "start", str(repo)], f"http://127.0.0.1:{port}", "/v2/models/press-02/ready"
    raise ValueError(f"unknown peer {env.name!r}")


def _wait(peer: RunningPeer, path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if peer.proc.poll() is not None:
            raise RuntimeError(f"{peer.name} exited with {peer.proc.returncode}; its log:\n"
                               f"{peer.log.read_text()[-3000:]}")
        try:
            if httpx.get(peer.base + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{peer.name} not ready at {peer.base}{path} within {timeout_s:.0f}s; its log:\n"
                       f"{peer.log.read_text()[-3000:]}")


def _stop(peer: RunningPeer) -> None:
    """The peer's whole process group (it was started in a session of its own)."""
    if peer.proc.poll() is None:
        try:
            os.killpg(peer.proc.pid, signal.SIGTERM)
            peer.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(peer.proc.pid, signal.SIGKILL)
            peer.proc.wait(5)
        except ProcessLookupError:
            pass


@contextmanager
def run_peers(envs: Sequence[PeerEnv], core: Path, root: Path, work: Path, *, equipment_id: str,
              power: str, workers: int = 1) -> Iterator[dict[str, RunningPeer]]:
    """Every peer running and ready, serving ``equipment_id``/``power`` from ``root``
    with ``workers`` worker processes each."""
    base_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    peers: dict[str, RunningPeer] = {}
    with ExitStack() as stack:
        for env in envs:
            cmd, base, ready_path = _launch(env, work, root, workers)
            log = work / f"{env.name}.log"
            proc_env = {**base_env, "PYTHONPATH": str(core), "PATH": f"{env.path / 'bin'}:{base_env.get('PATH', '')}",
                        "SERVE_ML_PEER_ROOT": str(root), "SERVE_ML_PEER_EQUIPMENT": equipment_id,
                        "SERVE_ML_PEER_POWER": power, "SERVE_ML_PEER_WORKERS": str(workers), "OMP_NUM_THREADS": "1", "BENTOML_HOME": str(work / "bentoml"),
                        "BENTOML_DO_NOT_TRACK": "true", "LITSERVE_DISABLE_TELEMETRY": "1"}
            with log.open("wb") as out:
                proc = subprocess.Popen(cmd, cwd=work, env=proc_env, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            peer = RunningPeer(env.name, base, proc, log)
            stack.callback(_stop, peer)
            peers[env.name] = peer
            _wait(peer, ready_path, 180)
        yield peers
