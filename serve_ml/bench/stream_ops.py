"""What ``bench stream`` switches on besides scoring, so the stream is measured with
the operations layer at work: the fleet registered in two sites, thresholds at the
three scopes (evaluated on every reading), status, rollups and alarm rules (always
on in the writer), two notification sinks (a signed webhook and a Slack-compatible
one, both to a local HTTP receiver), and a WebSocket client timing pushes."""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncpg
import orjson

from serve_ml.bench.common import Figure, Report
from serve_ml.core.ports import free_port
from serve_ml.core.settings import Settings
from serve_ml.deployments.api import create_api
from serve_ml.deployments.local import LocalCore, serve_in_thread
from serve_ml.operations.db import bump_generation
from serve_ml.scoring.metrics import NoMetrics
from serve_ml.scoring.service import ScoringService

THRESHOLDS = (  # evaluated on every reading; breached only by faulty machines
    ("type", "bench-machine", "current_a", {"warning_max": 30.0, "critical_max": 40.0}),
    ("location", "site-a", "process_temp_k", {"warning_max": 330.0, "critical_max": 340.0}),
    ("location", "site-b", "vibration_rms_mm_s", {"warning_max": 20.0, "valid_min": 0.0, "valid_max": 100.0}),
)


async def seed(database_url: str, equipment_ids: list[str]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            for i, eq in enumerate(dict.fromkeys(equipment_ids)):
                await conn.execute(
                    "INSERT INTO serve_ml_equipment (equipment_id, type, location) VALUES ($1, 'bench-machine', $2) "
                    "ON CONFLICT DO NOTHING", eq, ["site-a" if i % 2 else "site-b", f"line-{i % 4}"])
            for scope, target, sensor, limits in THRESHOLDS:
                cols = ", ".join(limits)
                marks = ", ".join(f"${k}" for k in range(4, 4 + len(limits)))
                await conn.execute(
                    f"INSERT INTO serve_ml_thresholds (scope, target, sensor, version, set_by, reason, {cols}) "
                    f"VALUES ($1, $2, $3, 1, 'bench', 'bench', {marks}) ON CONFLICT DO NOTHING",
                    scope, target, sensor, *limits.values())
            await bump_generation(conn)
    finally:
        await conn.close()


class Receiver:
    """A local HTTP endpoint for the sinks: counts what it is sent."""

    def __init__(self) -> None:
        self.received = 0
        self.port = free_port()
        me = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as real webhook receivers answer: with HTTP/1.0 every
            # delivery paid a new connection (and a thread here) on the bench's CPU.
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers.get("content-length", 0)))
                me.received += 1
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                # The bench kills the notifier between rounds: a kept-alive connection
                # reset then is expected, not worth a traceback in the bench's output.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)  # type: ignore[arg-type]

        self.server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def sinks_file(self, directory: Path) -> Path:
        path = directory / "notifications.yaml"
        path.write_text(f"""sinks:
  - {{name: bench-webhook, kind: webhook, url: "http://127.0.0.1:{self.port}/hook", secret: bench-signing-key-0123}}
  - {{name: bench-slack, kind: slack, url: "http://127.0.0.1:{self.port}/slack"}}
""")
        return path

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def api_server(settings: Settings, database_url: str) -> Iterator[str]:
    """The HTTP API in process on uvicorn (the WebSocket end), on a free port."""
    core = LocalCore(ScoringService(settings.root, enable_xgb=False, metrics=NoMetrics()), max_bulk_rows=1000,
                     database_url=database_url)
    with serve_in_thread(create_api(core, max_request_bytes=1 << 20)) as address:
        yield address


async def push_latencies(address: str, equipment_ids: list[str], seconds: float,
                         started: threading.Event) -> list[float]:
    """For ``seconds``, one WebSocket client per equipment: per pushed batch, now
    minus the newest reading's timestamp (the simulator stamps readings as it
    produces them), in ms."""
    import websockets

    out: list[float] = []

    async def follow(eq: str) -> None:
        async with websockets.connect(f"ws://{address}/api/v1/serve-ml/ws/equipment/{eq}") as ws:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    msg = orjson.loads(await asyncio.wait_for(ws.recv(), max(0.1, end - time.monotonic())))
                except TimeoutError:
                    return
                if msg.get("type") == "subscribed":
                    started.set()
                elif msg.get("type") == "verdicts" and msg["points"]["t_ms"]:
                    out.append(time.time() * 1000 - msg["points"]["t_ms"][-1])

    await asyncio.gather(*(follow(eq) for eq in equipment_ids))
    return out


class Crowd:
    """``n`` WebSocket clients in a process of their own, on the equipment's streams
    of an API server in this process (``bench.ws_crowd``)."""

    def __init__(self, settings: Settings, database_url: str, equipment_ids: list[str], n: int) -> None:
        self.settings, self.database_url, self.equipment_ids, self.n = settings, database_url, equipment_ids, n
        self.result: dict[str, float] = {}

    @contextmanager
    def connected(self) -> Iterator[Crowd]:
        import subprocess
        import sys

        core = LocalCore(ScoringService(self.settings.root, enable_xgb=False, metrics=NoMetrics()),
                         max_bulk_rows=1000, database_url=self.database_url, ws_max_per_client=self.n)
        with serve_in_thread(create_api(core, max_request_bytes=1 << 20)) as address:
            proc = subprocess.Popen([sys.executable, "-m", "serve_ml.bench.ws_crowd", address, str(self.n),
                                     ",".join(self.equipment_ids)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True)
            try:
                assert proc.stdout is not None and proc.stdin is not None
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError("the WebSocket crowd did not start")
                server_cpu0 = _thread_cpu_s(f"uvicorn:{address.rsplit(':', 1)[1]}")
                yield self
                server_cpu = _thread_cpu_s(f"uvicorn:{address.rsplit(':', 1)[1]}") - server_cpu0
                proc.stdin.close()
                self.result = orjson.loads(proc.stdout.readline())
                self.result["server_cpu_s"] = round(server_cpu, 3)
                proc.wait(60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def _thread_cpu_s(name: str) -> float:
    """CPU seconds used so far by this process's thread called ``name`` (the API
    server's, whose LISTEN connection and WebSocket fan-out run there)."""
    thread = next(t for t in threading.enumerate() if t.name == name)
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def crowd_figures(rep: Report, n: int, with_clients: list[float], without_median: float,
                  crowds: list[dict[str, float]]) -> None:
    """The rounds with ``n`` WebSocket clients against those without, and what the
    clients and the API server spent on them."""
    ratio = statistics.median(with_clients) / without_median
    rep.add(Figure(f"end to end with {n} WebSocket clients connected, alternating", "readings/s", with_clients))
    rep.add(Figure("with those clients / without (medians)", "ratio", [ratio], ">= 0.90", ratio >= 0.9))
    rep.add(Figure("WebSocket clients connected per round", "clients", [c.get("clients", 0) for c in crowds]))
    rep.add(Figure("WebSocket messages received per round", "messages", [c.get("messages", 0) for c in crowds]))
    rep.add(Figure("the API server's CPU per round (its thread: LISTEN and fan-out)", "s",
                   [c.get("server_cpu_s", 0.0) for c in crowds]))
    rep.add(Figure("the clients' own CPU per round (their process, on these cores)", "s",
                   [c.get("cpu_s", 0.0) for c in crowds]))
    rep.add(Figure("server CPU per message delivered", "µs",
                   [1e6 * c.get("server_cpu_s", 0.0) / max(1, c.get("messages", 0)) for c in crowds]))
    rep.add(Figure("client CPU per message received", "µs",
                   [1e6 * c.get("cpu_s", 0.0) / max(1, c.get("messages", 0)) for c in crowds]))
