"""The same HTTP API served by one process with no Ray: the plain-uvicorn baseline
the benchmarks compare against, and the app the no-Ray API unit tests drive.

    uvicorn --factory serve_ml.deployments.local:create_local_app --port 8001
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI

from serve_ml.bundles.batch import Reading, ReadingColumns, Result
from serve_ml.core.settings import Settings
from serve_ml.deployments.api import create_api
from serve_ml.deployments.auth import TokenGuard
from serve_ml.scoring.history import History
from serve_ml.scoring.management import LocalState, Management
from serve_ml.scoring.metrics import Metrics, NoMetrics
from serve_ml.scoring.service import ScoringService


class LocalCore:
    def __init__(self, service: ScoringService, *, max_bulk_rows: int, database_url: str | None = None,
                 guard: TokenGuard | None = None) -> None:
        self.service = service
        self.metrics: Metrics = service.metrics
        self.max_bulk_rows = max_bulk_rows
        self.history = History(database_url)
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

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        live = len(self.service.catalog.live)
        return bool(live), {"live_bundles": live, "unavailable_deployments": []}


def create_local_app(settings: Settings | None = None) -> FastAPI:
    s = settings or Settings()
    service = ScoringService(s.root, enable_xgb=s.enable_xgb, metrics=NoMetrics())
    guard = TokenGuard(s.admin_secret(), s.read_token.get_secret_value() if s.read_token else None)
    core = LocalCore(service, max_bulk_rows=s.max_bulk_rows, database_url=s.database_url, guard=guard)
    return create_api(core, max_request_bytes=s.max_request_bytes)
