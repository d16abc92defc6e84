"""The live-updates deployment: the API's WebSockets (``/api/v1/serve-ml/ws/...``),
served by a Serve application of their own.

Why not the HTTP ingress: Serve counts an open WebSocket as a request in flight for
as long as it stays open, against its replica's ``max_ongoing_requests``. In the
ingress the sockets took the slots and HTTP requests queued behind them: under
``serve-ml up``, half of a crowd of 1,000 clients could not connect, and a third of
the predictions sent meanwhile got no answer within 10 s (BENCHMARKS.md). Here the
sockets have a limit of their own (``ws_max_connections`` per replica; beyond it
and ``max_queued_requests`` waiting, an upgrade is refused with 503: a burst of
handshakes, every client reconnecting after a redeploy, queues briefly while the
router picks a replica), and the ingress keeps all of its slots for HTTP. Serve and
HAProxy route the longest matching prefix first, so every ``/ws/`` path reaches this
application while it is deployed. Without it the ingress serves the sockets, at most
a quarter of its slots' worth (``deployments.app.ingress_ws_max_connections``).

    serve_config.yaml: application ``serve-ml-live``, route_prefix /api/v1/serve-ml/ws
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from serve_ml.core.settings import Settings
from serve_ml.core.tracing import configure_logging
from serve_ml.deployments.api.routes.live import WS_PREFIX, gateway_router
from serve_ml.deployments.auth import TokenGuard
from serve_ml.deployments.live import LiveHub

LIVE_APP_NAME = "serve-ml-live"
LIVE_ROUTE_PREFIX = WS_PREFIX
LIVE_READY_PATH = "/-/ready"
"""Below the prefix, answered by this application alone: the launcher waits for it,
so the proxy routes the prefix here before ``serve-ml up`` says it is up."""


class LiveArgs(BaseModel):
    """The ``args`` of the ``serve-ml-live`` application (serve_config.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: int = Field(default=1, ge=1, le=64, description="Replicas of the gateway; each listens to "
                          "PostgreSQL once and holds up to ws_max_connections sockets.")
    replica_num_cpus: float = Field(default=0.1, ge=0, description="CPUs Ray reserves per replica.")


@serve.deployment(logging_config={"enable_access_log": False})
@serve.ingress()
class LiveGateway:
    """Holds the WebSockets of one replica and the hub that feeds them."""

    def __init__(self, database_url: str | None, ws_max_per_client: int) -> None:
        settings = Settings()  # tokens come from this process's environment, never from deployment args
        configure_logging(settings.log_format)
        self.guard = TokenGuard.of(settings)
        self.live = LiveHub(database_url, max_per_client=ws_max_per_client)

    def __serve_build_asgi_app__(self) -> Any:
        return create_live_api(self)


def create_live_api(core: Any) -> FastAPI:
    """The WebSocket routes alone, at paths relative to :data:`LIVE_ROUTE_PREFIX`.
    ``core`` has the ``live`` hub and the ``guard`` the routes read."""
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await core.live.close()  # withdraws what its clients followed (operations.live_follows)

    app = FastAPI(title="serve-ml live", openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.core = core
    app.include_router(gateway_router())

    @app.get(LIVE_READY_PATH, include_in_schema=False)
    async def ready() -> dict[str, Any]:
        return {"application": LIVE_APP_NAME, "connections": core.live.connections, **core.live.counts}

    return app


def build_live_graph(args: LiveArgs, s: Settings) -> Application:
    """The gateway for explicit settings (used by the launcher)."""
    return LiveGateway.options(  # type: ignore[attr-defined]
        num_replicas=args.replicas, max_ongoing_requests=s.ws_max_connections, max_queued_requests=s.max_queued_requests,
        ray_actor_options={"num_cpus": args.replica_num_cpus}).bind(s.database_url, s.ws_max_per_client)


def build_live_app(args: dict[str, Any]) -> Application:
    """``import_path`` target for ``serve run`` / ``serve deploy``."""
    return build_live_graph(LiveArgs.model_validate(args or {}), Settings())
