"""The HTTP API, built by one factory for both the Ray Serve ingress and the
plain-uvicorn baseline: one router per concern (``routes/``), the dependencies they
share (``deps.py``). Errors are translated to HTTP here and only here."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

import serve_ml
from serve_ml.core import reading
from serve_ml.core.errors import ServeMLError
from serve_ml.deployments.api.body import PARSE_INLINE_MAX_BYTES, OrjsonRoute
from serve_ml.deployments.api.deps import Core, error_response, json_response
from serve_ml.deployments.api.hot import HotRoutes
from serve_ml.deployments.api.routes import (
    alarm_rules,
    alarms,
    audit,
    bundles,
    equipment,
    health,
    history,
    live,
    maintenance,
    notifications,
    predict,
    session,
    status,
    thresholds,
    train,
    v2,
)
from serve_ml.deployments.edge import HEALTH_CACHE_S, PREFIX, V2_PREFIX, Cached, EdgeMiddleware, v2_error_body
from serve_ml.deployments.portal import mount_portal
from serve_ml.deployments.ratelimit import RateLimiter
from serve_ml.deployments.schemas import BOTH_FORMS, BULK_FORMS

log = logging.getLogger("serve_ml.api")
ROUTERS = (predict.router, bundles.router, history.router, health.router, equipment.router, thresholds.router,
           status.router, alarms.router, notifications.router, live.router,
           maintenance.router, alarm_rules.router, session.router, audit.router, train.router, v2.router)


def create_api(core: Core, *, max_request_bytes: int, limiter: RateLimiter | None = None,
               tracing: bool = False) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        # a replica leaving withdraws what its clients followed now, not when the rows expire
        await core.live.close()
        if core.http_store is not None:  # its producer lives on this loop
            await core.http_store.close()

    app = FastAPI(title="serve-ml", version=serve_ml.__version__, lifespan=lifespan,
                  description="Predictive-maintenance scoring of factory sensor readings.")
    app.router.route_class = OrjsonRoute
    app.state.core = core
    app.state.ready_answer = Cached(core.ready, HEALTH_CACHE_S)
    app.state.stream_answer = Cached(core.stream_health, HEALTH_CACHE_S)
    app.state.deployments_answer = Cached(core.deployments, HEALTH_CACHE_S)
    for router in ROUTERS:
        app.include_router(router)
    mount_portal(app)

    def shaped(request: Request, body: dict[str, Any]) -> dict[str, Any]:
        return v2_error_body(body) if request.url.path.startswith(f"{V2_PREFIX}/") else body

    @app.exception_handler(ServeMLError)
    async def _serve_ml_error(request: Request, exc: ServeMLError) -> Response:
        response = error_response(exc)
        if request.url.path.startswith(f"{V2_PREFIX}/"):
            retry = response.headers.get("retry-after")
            return json_response(v2_error_body(exc.to_dict()), exc.status_code,
                                 {"Retry-After": retry} if retry else None)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI's own refusals (no such route, wrong method, a body it cannot decode)
        # get the project's body too; an undecodable body is malformed JSON, like any other.
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            body = {"error": "InvalidRequest", "message": "invalid request: the body is not valid UTF-8 JSON"}
            return json_response(shaped(request, body), 422)
        name = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return json_response(shaped(request, {"error": name, "message": str(exc.detail)}), exc.status_code,
                             dict(exc.headers) if exc.headers else None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = refused_form(list(exc.errors()))
        problems = [_problem(e) for e in errors]
        body = {"error": "InvalidRequest", "message": "invalid request: " + "; ".join(problems[:20]),
                "detail": [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors[:50]]}
        return json_response(shaped(request, body), 422)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        ref = uuid.uuid4().hex[:12]
        log.exception("internal error (ref %s)", ref)
        return json_response(shaped(request, {"error": "InternalError", "message": f"internal error (ref {ref})"}),
                             500)

    app.add_middleware(HotRoutes, core=core)  # inside the edge: its checks and metrics apply
    # The edge labels metrics by route template: the templates come from the routers
    # (FastAPI may add include_router()ed routes to app.routes lazily).
    app.add_middleware(EdgeMiddleware, metrics=core.metrics, max_bytes=max_request_bytes,
                       routes=frozenset(r.path for router in ROUTERS for r in router.routes),  # type: ignore[attr-defined]
                       guard=core.guard,
                       audit=core.operations.audit.record if core.history.database_url else None,
                       limiter=limiter, tracing=tracing)
    return app


BOTH = "both_forms"


def refused_form(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A bulk item that fits neither form (a reading, a window) is refused by both:
    keep the problems of the form its keys chose, so the message names only those
    (a window when it has ``readings``; both keys at once is its own problem)."""
    reading_form, window_form = BULK_FORMS
    chose: dict[int, str] = {}
    for e in errors:
        loc = [p for p in e.get("loc", ()) if p != "body"]
        if len(loc) >= 4 and loc[0] == "readings" and loc[2] in BULK_FORMS and e.get("type") == "extra_forbidden":
            extra = {(reading_form, "readings"): window_form, (window_form, "features"): reading_form}.get(
                (loc[2], loc[3]))
            if extra is not None:
                chose[loc[1]] = BOTH if chose.get(loc[1], extra) != extra else extra
    out, said_both = [], set()
    for e in errors:
        loc = [p for p in e.get("loc", ()) if p != "body"]
        if len(loc) < 3 or loc[0] != "readings" or loc[2] not in BULK_FORMS:
            out.append(e)
            continue
        form = chose.get(loc[1], reading_form)
        if form == BOTH:
            if loc[1] not in said_both:
                said_both.add(loc[1])
                out.append({"loc": ("body", "readings", loc[1]), "type": BOTH, "msg": BOTH_FORMS})
        elif loc[2] == form:
            out.append(e)
    return out


def _problem(e: Any) -> str:
    """One validation error in words: the reading contract's where it speaks of the
    field (so HTTP and the stream refuse a reading alike), else pydantic's."""
    loc = [p for p in e.get("loc", ()) if p not in ("body", "query")]
    prefix = ""
    if len(loc) >= 2 and loc[0] == "readings" and isinstance(loc[1], int):  # one reading of a bulk request
        prefix, loc = f"readings[{loc[1]}].", loc[2:]
        if e.get("type") == BOTH:
            return f"{prefix.rstrip('.')}: {BOTH_FORMS}"
        if loc and loc[0] in BULK_FORMS:  # the form it was judged as (refused_form): its keys say so already
            loc = loc[1:]
    said = reading.translate(loc, e.get("type", ""))
    if said is not None:
        return prefix + said
    why = (e.get("ctx") or {}).get("error")  # what the JSON parser said, for a body that is not JSON
    where = ".".join(str(p) for p in loc) or "body"
    return f"{prefix}{where}: {e.get('msg')}" + (f" ({why})" if isinstance(why, str) else "")


__all__ = ["PARSE_INLINE_MAX_BYTES", "PREFIX", "Core", "create_api"]
