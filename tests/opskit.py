"""Helpers for the operations tests: the project's API app on an in-process core
over the shared stack's database, and batches stored by the stream writer's own
``write_batch`` (no Kafka in between)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from fastapi.testclient import TestClient

from serve_ml.bundles.batch import Reading
from serve_ml.bundles.catalog import Catalog
from serve_ml.deployments.api import create_api
from serve_ml.deployments.auth import TokenGuard
from serve_ml.deployments.local import LocalCore, serve_in_thread
from serve_ml.operations.follow import OpsFollower
from serve_ml.operations.live_follows import LiveAudience
from serve_ml.operations.thresholds import ThresholdBook
from serve_ml.pipelines.encode import Origin, Rows, encode_scored
from serve_ml.pipelines.quality import SensorScreen
from serve_ml.pipelines.schema import Partitions
from serve_ml.pipelines.stack import Stack
from serve_ml.pipelines.store import WriteStats, write_batch
from serve_ml.scoring.service import ScoringService

API = "/api/v1/serve-ml"
OPERATOR_TOKEN = "operator-token-0000001"
VIEWER_TOKEN = "viewer-token-000000001"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
VIEWER = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
OPS_EQUIPMENT = ("ops-press-1", "ops-press-2", "notify-1", "notify-2", "quality-1", "live-1", "live-2", "live-3",
                 "live-4", "maint-1", "rules-1", "rules-2", "client-1")
"""Equipment with bundles in the ``ops_root`` fixture: ids no other test uses."""

_HOURS = itertools.count(30)


@contextmanager
def ops_api(stack: Stack, root: Path, alerts_topic: str) -> Iterator[TestClient]:
    service = ScoringService(root, enable_xgb=False)
    core = LocalCore(service, max_bulk_rows=1000, database_url=stack.database_url, alerts_topic=alerts_topic,
                     guard=TokenGuard(None, VIEWER_TOKEN, operator_token=OPERATOR_TOKEN))
    with TestClient(create_api(core, max_request_bytes=1 << 20)) as client:
        yield client


@contextmanager
def ops_server(stack: Stack, root: Path, alerts_topic: str) -> Iterator[str]:
    """The same app served by a real uvicorn on a free port (WebSockets need one);
    yields its address."""
    service = ScoringService(root, enable_xgb=False)
    core = LocalCore(service, max_bulk_rows=1000, database_url=stack.database_url, alerts_topic=alerts_topic,
                     guard=TokenGuard(None, VIEWER_TOKEN, operator_token=OPERATOR_TOKEN))
    with serve_in_thread(create_api(core, max_request_bytes=1 << 20)) as address:
        yield address


def fresh_hour() -> dt.datetime:
    """An hour ahead, later at each call: rollup rows are one test's alone, and each
    write is newer than the last (status follows the latest reading)."""
    h = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return h + dt.timedelta(hours=next(_HOURS))


def encode(root: Path, eq: str, rows: list[dict[str, float]], base: dt.datetime,
           screen: SensorScreen | None = None) -> Rows:
    """Score and encode ``rows`` as the stream does (with its data-quality gate, when given)."""
    readings = [Reading(eq, r, "5.5kW") for r in rows]
    origins = [Origin(base + dt.timedelta(seconds=k), r, "ops", 0, k) for k, r in enumerate(rows)]
    encoded, rejected = encode_scored(Catalog.scan(root), readings, origins, enable_xgb=False, screen=screen)
    assert not rejected
    return encoded


def book_now(stack: Stack) -> ThresholdBook:
    """The thresholds in force, as a stream scorer would load them."""
    async def go() -> ThresholdBook:
        follower = OpsFollower()
        pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=1)
        try:
            await follower.refresh(pool)
        finally:
            await pool.close()
        return follower.book
    return asyncio.run(go())


def write(stack: Stack, *batches: Rows, alerts_topic: str, resolve_after: int = 3) -> list[WriteStats]:
    """Store ``batches`` in order with the thresholds in force now, notifying the live
    summaries of the equipment WebSocket clients follow now, as a stream scorer does."""
    async def go() -> list[WriteStats]:
        follower, audience = OpsFollower(), LiveAudience()
        pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=1)
        try:
            await follower.refresh(pool)
            await audience.refresh(pool)
            async with pool.acquire() as conn:
                return [await write_batch(conn, b, partitions=Partitions(stack.mode), alerts_topic=alerts_topic,
                                          resolve_after=resolve_after, book=follower.book, live=audience.equipment)
                        for b in batches]
        finally:
            await pool.close()
    return asyncio.run(go())
