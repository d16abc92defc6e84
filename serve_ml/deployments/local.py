"""The same HTTP API served by one process with no Ray: the plain-uvicorn baseline
the benchmarks compare against, and the app the no-Ray API unit tests drive.

    uvicorn --factory serve_ml.deployments.local:create_local_app --port 8001
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from serve_ml.bundles.batch import Reading, ReadingColumns, Result
from serve_ml.core.ports import free_port
from serve_ml.core.settings import Settings
from serve_ml.core.tracing import configure_logging, configure_tracing
from serve_ml.deployments.api import create_api
from serve_ml.deployments.auth import TokenGuard
from serve_ml.deployments.http_store import HttpStore
from serve_ml.deployments.live import LiveHub
from serve_ml.deployments.ratelimit import rate_limiter
from serve_ml.operations.dead_letters import DeadLetters
from serve_ml.operations.follow import IngressBook
from serve_ml.operations.service import Operations
from serve_ml.scoring.history import History
from serve_ml.scoring.management import LocalState, Management
from serve_ml.scoring.metrics import Metrics, NoMetrics
from serve_ml.scoring.service import ScoringService


class LocalCore:
    def __init__(self, service: ScoringService, *, max_bulk_rows: int, database_url: str | None = None,
                 guard: TokenGuard | None = None, alerts_topic: str = "serve-ml.alerts",
                 stale_after_s: float = 300.0, http_store: HttpStore | None = None,
                 ws_max_per_client: int = 16, dead_letters: DeadLetters | None = None) -> None:
        self.service = service
        self.dead_letters = dead_letters
        self.metrics: Metrics = service.metrics
        self.max_bulk_rows = max_bulk_rows
        self.history = History(database_url)
        self.operations = Operations(self.history.pool, alerts_topic=alerts_topic, stale_after_s=stale_after_s)
        self.live = LiveHub(database_url, max_per_client=ws_max_per_client)
        self.book = IngressBook(self.history.pool if database_url else None)
        self.http_store = http_store
        self.guard = guard or TokenGuard(None, None)
        self.management = Management(service, LocalState(), self.history)

    async def score(self, readings: list[Reading]) -> list[Result]:
        return self.service.score(readings)

    async def score_bulk(self, readings: ReadingColumns) -> tuple[int, bytes]:
        if readings.n > 64:  # keep large batches off the event loop
            return await asyncio.to_thread(self.service.score_bulk, readings)
        return self.service.score_bulk(readings)

    async def score_columns(self, eq: str, power: str | None, version: str | None,
                            columns: dict[str, Any], n: int) -> tuple[int, bytes]:
        if n > 64:
            return await asyncio.to_thread(self.service.score_columns, eq, power, version, columns, n)
        return self.service.score_columns(eq, power, version, columns, n)

    def describe(self) -> list[dict[str, Any]]:
        return self.service.describe()

    async def stream_health(self) -> dict[str, Any]:
        return {}  # no stream actors without Ray

    async def deployments(self) -> dict[str, Any]:
        return {"app": "in-process", "deployments": {}}  # no Serve deployments without Ray

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        live = len(self.service.catalog.live)
        return bool(live), {"live_bundles": live, "unavailable_deployments": []}


def create_local_app(settings: Settings | None = None) -> FastAPI:
    s = settings or Settings()
    service = ScoringService(s.root, enable_xgb=s.enable_xgb, metrics=NoMetrics())
    guard = TokenGuard.of(s)
    core = LocalCore(service, max_bulk_rows=s.max_bulk_rows, database_url=s.database_url, guard=guard,
                     alerts_topic=s.alerts_topic, stale_after_s=s.stale_after_s,
                     dead_letters=DeadLetters(s.kafka_bootstrap, s.dead_letter_topic) if s.kafka_bootstrap else None)
    tracing = configure_tracing("serve-ml", s.otlp_endpoint)
    configure_logging(s.log_format)
    return create_api(core, max_request_bytes=s.max_request_bytes, tracing=tracing,
                      limiter=rate_limiter(s.rate_limit_per_s, s.rate_limit_burst))


@contextmanager
def serve_in_thread(app: FastAPI, *, start_timeout_s: float = 30.0) -> Iterator[str]:
    """``app`` on a real uvicorn server in a thread of this process, on a free
    loopback port; yields ``host:port`` (for benchmarks and tests that need a socket,
    WebSockets among them). The server's thread is named ``uvicorn:<port>``."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
