"""The HTTP ingress deployment: routes readings to equipment deployments.

Single readings take the fast path by default: the ingress scores them itself with
the same ScoringService the equipment replicas use (one Serve hop costs ~1.7 ms on
these machines; the scoring of one row costs ~0.05 ms). Bulk requests fan out to
the autoscaled equipment deployments, one call per equipment, concurrently.
Equipment without a dedicated deployment (e.g. added by a sync) are scored here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import ray
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from serve_ml.bundles.batch import Reading, ReadingColumns, Result
from serve_ml.bundles.catalog import Override
from serve_ml.core.errors import GatewayTimeout, Overloaded, ServeMLError
from serve_ml.core.settings import Settings
from serve_ml.core.tracing import configure_logging, configure_tracing, inject
from serve_ml.deployments.api import create_api
from serve_ml.deployments.auth import TokenGuard
from serve_ml.deployments.http_store import HttpStore
from serve_ml.deployments.live import LiveHub
from serve_ml.deployments.ratelimit import rate_limiter
from serve_ml.deployments.wire import encode_readings, merge_items
from serve_ml.operations.dead_letters import DeadLetters
from serve_ml.operations.follow import IngressBook
from serve_ml.operations.service import Operations
from serve_ml.scoring.control import GenerationWatcher, get_control
from serve_ml.scoring.history import History
from serve_ml.scoring.management import Management
from serve_ml.scoring.metrics import Metrics
from serve_ml.scoring.service import ScoringService

log = logging.getLogger("serve_ml.ingress")


class IngressArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str
    enable_xgb: bool
    fast_path: bool = Field(description="Score single readings in the ingress instead of a handle hop.")
    columns_fast_path_max_rows: int = Field(default=0, description="Columnar requests up to this size too.")
    max_bulk_rows: int
    max_request_bytes: int
    request_timeout_s: float
    equipment_deadline_s: float = Field(default=5.0, gt=0, description="Equipment calls not answered within this "
                                        "are scored in the ingress instead.")
    retry_after_s: int = 1
    poll_interval_s: float
    database_url: str | None = Field(default=None, description="Read endpoints' database; None: they answer 503.")
    alerts_topic: str = Field(default="serve-ml.alerts", description="Where alarm transitions are published.")
    stale_after_s: float = Field(default=300.0, gt=0, description="No reading for this long: status no_data.")
    store_to: str | None = Field(default=None, description="Kafka bootstrap to store HTTP predictions through "
                                                           "(SERVE_ML_STORE_HTTP_PREDICTIONS); None: not stored.")
    features_topic: str = Field(default="serve-ml.features", description="The stream's features topic.")
    ws_max_per_client: int = Field(default=16, ge=1, description="WebSocket connections per client address.")
    ws_max_connections: int = Field(default=16, ge=1, description="WebSockets this replica holds at once. They "
                                    "reach it only when the serve-ml-live application is not deployed, and each "
                                    "takes one of its request slots; more are closed with 1013.")
    kafka_bootstrap: str | None = Field(default=None, description="Broker of the stream (dead letters are read "
                                        "from it); None: no stream.")
    dead_letter_topic: str = Field(default="serve-ml.features.dlq", description="The stream's dead-letter topic.")
    rate_limit_per_s: float = Field(default=0.0, ge=0, description="Scoring requests/s per client; 0: no limit.")
    rate_limit_burst: int = Field(default=0, ge=0, description="Bucket size; 0: one second's worth.")


INLINE_MAX_ROWS = 1024


@serve.deployment(logging_config={"enable_access_log": False})
@serve.ingress()
class Ingress:
    def __init__(self, handles: dict[str, DeploymentHandle], args: dict[str, Any]) -> None:
        self.args = IngressArgs.model_validate(args)
        self.max_bulk_rows = self.args.max_bulk_rows
        self.handles = own_transport(handles)
        self.metrics = Metrics()
        self.history = History(self.args.database_url)
        self.operations = Operations(self.history.pool, alerts_topic=self.args.alerts_topic,
                                     stale_after_s=self.args.stale_after_s)
        self.live = LiveHub(self.args.database_url, max_per_client=self.args.ws_max_per_client,
                            max_connections=self.args.ws_max_connections)
        self.book = IngressBook(self.history.pool if self.args.database_url else None)
        self.dead_letters = (None if self.args.kafka_bootstrap is None
                             else DeadLetters(self.args.kafka_bootstrap, self.args.dead_letter_topic))
        self.http_store = None if self.args.store_to is None else HttpStore(self.args.store_to,
                                                                            self.args.features_topic)
        settings = Settings()  # tokens come from this process's environment, never from deployment args
        self.tracing = configure_tracing("serve-ml-ingress", settings.otlp_endpoint)
        configure_logging(settings.log_format)
        self.guard = TokenGuard.of(settings)
        self.control = get_control(self.args.database_url)
        generation, overrides = ray.get(self.control.state.remote())
        self.service = ScoringService(Path(self.args.root), enable_xgb=self.args.enable_xgb,
                                      live_overrides=overrides, metrics=self.metrics)
        self.service.generation = generation
        self.watcher = GenerationWatcher(self.service, self.control, self.args.poll_interval_s)
        self.watcher.start()
        self.management = Management(self.service, ClusterState(self.control, self.handles), self.history)

    def __serve_build_asgi_app__(self) -> Any:
        return create_api(self, max_request_bytes=self.args.max_request_bytes, tracing=getattr(self, "tracing", False),
                          limiter=rate_limiter(self.args.rate_limit_per_s, self.args.rate_limit_burst))

    async def score(self, readings: list[Reading]) -> list[Result]:
        if self.args.fast_path:
            return self.service.score(readings)
        errors, items = await self.score_bulk(ReadingColumns.of_readings(readings))
        return [_error_from_item(i) if "error" in i and "status" in i else i for i in orjson.loads(items)]

    async def score_bulk(self, readings: ReadingColumns) -> tuple[int, bytes]:
        # Route per equipment id, not per reading: the per-reading steps are C-level.
        route = {eq: eq if eq in self.handles else "" for eq in dict.fromkeys(readings.equipment_ids)}
        targets = list(dict.fromkeys(route.values()))
        if len(targets) == 1:
            return await self._score_part(targets[0], readings)
        dest = np.array(list(map(route.__getitem__, readings.equipment_ids)), dtype=object)
        idxs = [np.flatnonzero(dest == t).tolist() for t in targets]
        parts = await asyncio.gather(*(self._score_part(t, readings.take(idx)) for t, idx in zip(targets, idxs,
                                                                                                strict=True)))
        errors = sum(e for e, _ in parts)
        return errors, merge_items(readings.n, [(idx, items) for idx, (_, items) in zip(idxs, parts, strict=True)])

    async def _score_part(self, eq: str, readings: ReadingColumns) -> tuple[int, bytes]:
        """On ``eq``'s deployment, or here ("": no dedicated deployment)."""
        if eq:
            return await self._call(eq, "score_wire", encode_readings(readings),
                                    local=lambda: self.service.score_bulk(readings))
        return await asyncio.to_thread(self.service.score_bulk, readings)

    async def score_columns(self, eq: str, power: str | None, version: str | None,
                            columns: dict[str, Any], n: int) -> tuple[int, bytes]:
        def local() -> tuple[int, bytes]:
            return self.service.score_columns(eq, power, version, columns, n)

        if eq in self.handles and n > self.args.columns_fast_path_max_rows:
            return await self._call(eq, "score_columns", eq, power, version, columns, n, local=local)
        if n <= INLINE_MAX_ROWS:
            # ~0.2 ms of numpy per 1,000 rows: cheaper on the event loop than the hop to a
            # worker thread and back (1,000-row binary requests: 580 -> 775 req/s per
            # ingress replica). Larger requests go to a thread.
            return local()
        return await asyncio.to_thread(local)

    async def _call(self, eq: str, method: str, *args: Any, local: Callable[[], Any]) -> Any:
        kwargs = {"trace": inject()} if getattr(self, "tracing", False) else {}
        response = getattr(self.handles[eq], method).remote(*args, **kwargs)
        deadline = min(self.args.equipment_deadline_s, self.args.request_timeout_s)
        t0 = time.monotonic()
        try:
            return await asyncio.wait_for(response, deadline)
        except TimeoutError:
            response.cancel()
            if deadline >= self.args.request_timeout_s:
                raise GatewayTimeout(f"equipment {eq!r} did not answer within {self.args.request_timeout_s}s") from None
            # A replica on a lost node hangs rather than fails until Ray notices the node
            # is gone; score here with what is left of the request's time.
            self.metrics.replica_fallback(eq)
            log.warning("equipment deployment %r did not answer within %.1fs; scoring in the ingress", eq, deadline)
            try:
                return await asyncio.wait_for(asyncio.to_thread(local),
                                              self.args.request_timeout_s - (time.monotonic() - t0))
            except TimeoutError:
                raise GatewayTimeout(f"equipment {eq!r} did not answer within "
                                     f"{self.args.request_timeout_s}s") from None
        except BackPressureError:
            raise Overloaded(f"equipment deployment {eq!r}", self.args.retry_after_s) from None
        except (RayActorError, DeploymentUnavailableError) as exc:
            # The replica died mid-call (killed, OOM, node lost) or none is ready while a
            # replacement starts (~9 s here). Scoring is a pure function of its input and
            # this replica holds every bundle, so answer here rather than wait: same code,
            # same answers (tests prove the paths agree), counted as a fallback.
            self.metrics.replica_fallback(eq)
            log.warning("equipment deployment %r unavailable (%s); scoring in the ingress", eq, type(exc).__name__)
            return await asyncio.to_thread(local)

    def describe(self) -> list[dict[str, Any]]:
        return self.service.describe()

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        live = len(self.service.catalog.live)

        async def ping(eq: str) -> bool:
            try:
                await asyncio.wait_for(self.handles[eq].generation.remote(), 2.0)
                return True
            except Exception:
                return False

        oks = await asyncio.gather(*(ping(eq) for eq in self.handles))
        down = sorted(eq for eq, ok in zip(self.handles, oks, strict=True) if not ok)
        return bool(live) and not down, {"live_bundles": live, "unavailable_deployments": down,
                                         "handle_transport": sorted({transport(h) for h in self.handles.values()})}

    async def stream_health(self) -> dict[str, Any]:
        return await stream_actors_health()

    async def deployments(self) -> dict[str, Any]:
        """The app's status and each deployment's replicas by state (from Serve's controller)."""
        name = serve.get_replica_context().app_name
        app = (await asyncio.to_thread(serve.status)).applications.get(name)
        if app is None:
            return {"app": "absent", "deployments": {}}
        def word(state: Any) -> str:  # Serve's states are str enums: their value, not "Enum.NAME"
            return str(getattr(state, "value", state))

        return {"app": word(app.status), "deployments": {
            name: {"status": word(d.status), "replicas": {word(k): v for k, v in d.replica_states.items()}}
            for name, d in sorted(app.deployments.items())}}


class ClusterState:
    """Live state in the control-plane actor; converged when every equipment
    deployment reports the generation."""

    def __init__(self, control: Any, handles: dict[str, DeploymentHandle]) -> None:
        self.control = control
        self.handles = handles

    async def history(self) -> list[dict[str, Any]]:
        return await self.control.history.remote()

    async def apply(self, key: tuple[str, str], override: Override | None, entry: dict[str, Any]) -> int:
        return await self.control.apply.remote(key, override, entry)

    async def bump(self, reason: str) -> int:
        return await self.control.bump.remote(reason)

    async def state(self) -> tuple[int, Mapping[tuple[str, str], Override]]:
        return await self.control.state.remote()

    async def converge(self, generation: int, equipment: Collection[str], timeout_s: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout_s
        pending = sorted(set(self.handles) & set(equipment))

        async def served(eq: str) -> int:
            # every call bounded: a replica that is draining, or a deployment that is
            # being replaced, may never answer
            return await asyncio.wait_for(self.handles[eq].generation.remote(),
                                          max(0.1, deadline - time.monotonic()))

        while pending and time.monotonic() < deadline:
            gens = await asyncio.gather(*(served(eq) for eq in pending), return_exceptions=True)
            pending = [eq for eq, g in zip(pending, gens, strict=True)
                       if not isinstance(g, int) or g < generation]
            if pending:
                await asyncio.sleep(0.2)
        return not pending

    async def reconcile(self) -> dict[str, Any] | None:
        # which equipment has its own deployment follows the root too (in the background)
        return await self.control.reconcile.remote()


def own_transport(handles: dict[str, DeploymentHandle]) -> dict[str, DeploymentHandle]:
    """The same handles, made again in this replica so that they use its transport.

    A handle takes its transport (gRPC, or Ray actor calls) from the Ray Serve flags
    of the process that built it, as they were when that process imported Ray Serve.
    ``serve.run`` builds the graph in the driver, and ``serve-ml up``, the tests and
    the benchmarks import Ray Serve there before the launcher sets
    ``RAY_SERVE_THROUGHPUT_OPTIMIZED``: every hop went over actor calls although
    the cluster runs gRPC (single-row predict through the hop, 16 clients: 179-250
    req/s over actor calls, 275-343 over gRPC).
    """
    return {eq: serve.get_deployment_handle(h.deployment_name, h.app_name) for eq, h in handles.items()}


def transport(handle: DeploymentHandle) -> str:
    # Ray exposes the choice only as this private option (``options(_by_reference=...)``).
    return "actor calls" if handle.handle_options._by_reference else "gRPC"  # type: ignore[attr-defined]


STREAM_ACTOR_PREFIX = "serve-ml-stream-"


async def stream_actors_health(timeout_s: float = 3.0) -> dict[str, Any]:
    """Health of every running stream-scorer actor, found by name."""
    # a blocking GCS call: off the event loop, which in throughput-optimised mode serves every request
    actors = await asyncio.to_thread(ray.util.list_named_actors, all_namespaces=True)
    names = [a["name"] for a in actors if a["namespace"] == "serve-ml" and a["name"].startswith(STREAM_ACTOR_PREFIX)]

    async def one(name: str) -> dict[str, Any]:
        try:
            actor = ray.get_actor(name, namespace="serve-ml")
            return await asyncio.wait_for(actor.health.remote(), timeout_s)
        except Exception as exc:  # restarting (killed) or gone
            return {"state": f"unavailable: {type(exc).__name__}"}

    return dict(zip(sorted(names), await asyncio.gather(*(one(n) for n in sorted(names))), strict=True))


class _RemoteError(ServeMLError):
    """An error item returned by an equipment deployment, re-raised verbatim."""

    body: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.body


def _error_from_item(item: dict[str, Any]) -> ServeMLError:
    err = _RemoteError(item["error"]["message"], detail=item["error"].get("detail"))
    err.status_code = item["status"]
    err.body = item["error"]
    return err
