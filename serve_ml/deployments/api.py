"""The HTTP API, built by one factory for both the Ray Serve ingress and the
plain-uvicorn baseline. Errors are translated to HTTP here and only here."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Literal, Protocol

import orjson
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute

import serve_ml
from serve_ml.bundles.batch import Reading, ReadingColumns, Result
from serve_ml.bundles.columns import from_binary, to_arrays
from serve_ml.core.errors import InvalidQuery, Overloaded, PayloadTooLarge, ServeMLError, UnsupportedMediaType
from serve_ml.deployments.auth import TokenGuard
from serve_ml.deployments.edge import HEALTH_CACHE_S, PREFIX, Cached, EdgeMiddleware
from serve_ml.deployments.schemas import (
    ActivateRequest,
    BulkRequest,
    BulkResponse,
    ChangeRequest,
    ColumnsRequest,
    ColumnsResponse,
    ErrorBody,
    PredictRequest,
    PredictResponse,
    SyncResponse,
)
from serve_ml.scoring.history import History
from serve_ml.scoring.metrics import Metrics

BINARY_MEDIA_TYPE = "application/octet-stream"
log = logging.getLogger("serve_ml.api")
ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (400, 404, 413, 422, 503)}


class Core(Protocol):
    """What the API needs from whoever does the work (Serve graph or in-process)."""

    metrics: Metrics
    max_bulk_rows: int
    history: History
    guard: TokenGuard

    async def score(self, readings: list[Reading]) -> list[Result]: ...
    async def score_bulk(self, readings: ReadingColumns) -> tuple[int, bytes]: ...
    async def score_columns(self, eq: str, power: str | None, version: str | None,
                            columns: dict[str, Any], n: int) -> tuple[int, bytes]: ...
    def describe(self) -> list[dict[str, Any]]: ...
    async def sync(self) -> dict[str, Any]: ...
    async def ready(self) -> tuple[bool, dict[str, Any]]: ...
    async def stream_health(self) -> dict[str, Any]: ...
    async def live_history(self) -> list[dict[str, Any]]: ...
    async def install(self, archive: bytes) -> str: ...
    async def change_live(self, action: str, eq: str, power: str, *, version: str | None = None,
                          pin: bool = True, reason: str = "") -> dict[str, Any]: ...


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_response(exc: ServeMLError) -> Response:
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Overloaded) else None
    return json_response(exc.to_dict(), exc.status_code, headers)


def _reading(r: PredictRequest) -> Reading:
    return Reading(r.equipment_id, r.features, r.power, r.model_version)


# Bodies larger than this are parsed on a worker thread: a 16 MiB document takes
# tens of ms of orjson, which on the event loop would stall every other request.
# Below it (a 2,000-row bulk request is ~300 KB, ~1 ms) the thread hop costs more.
PARSE_INLINE_MAX_BYTES = 1 << 20


class _OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            inline = len(body) <= PARSE_INLINE_MAX_BYTES
            try:
                self._json = orjson.loads(body) if inline else await asyncio.to_thread(orjson.loads, body)
            except orjson.JSONDecodeError:
                if not inline:
                    # No second parse of a large body: JSON has no NaN or Infinity, and a
                    # body that orjson refuses is refused whole.
                    raise json.JSONDecodeError("not valid JSON (NaN and Infinity are not JSON either)",
                                               "", 0) from None
                # The stdlib accepts NaN/Infinity literals, so the scorer can then name
                # the non-finite feature; truly malformed JSON raises here (-> 422).
                self._json = json.loads(body)
        return self._json


class _OrjsonRoute(APIRoute):
    """Parses JSON bodies with orjson: ~5x faster than the stdlib for bulk bodies."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return route


def create_api(core: Core, *, max_request_bytes: int) -> FastAPI:
    # Routes go on the app itself: FastAPI >= 0.137 keeps include_router()ed routes
    # lazy, and the edge middleware needs the full path list for its metric labels.
    app = FastAPI(title="serve-ml", version=serve_ml.__version__,
                  description="Predictive-maintenance scoring of factory sensor readings.")
    app.router.route_class = _OrjsonRoute

    # async on purpose: FastAPI runs a plain-def dependency on a worker thread, and a
    # thread hop per request cost ~0.4 ms here, more than scoring a reading.
    async def admin(authorization: str | None = Header(default=None, description="Bearer <admin token>")) -> None:
        core.guard.admin(authorization)

    async def reader(authorization: str | None = Header(default=None,
                                                        description="Bearer <read token>, if set")) -> None:
        core.guard.read(authorization)

    read_only = [Depends(reader)]
    manage = [Depends(admin)]

    @app.post(f"{PREFIX}/predict", response_model=PredictResponse, responses=ERRORS, dependencies=read_only)
    async def predict(req: PredictRequest) -> Response:
        """Score one reading against its equipment's bundle."""
        t0 = time.perf_counter()
        (res,) = await core.score([_reading(req)])
        if isinstance(res, ServeMLError):
            return error_response(res)
        res["latency_ms"] = (time.perf_counter() - t0) * 1e3
        return json_response(res)

    @app.post(f"{PREFIX}/predict/bulk", response_model=BulkResponse, responses=ERRORS, dependencies=read_only)
    async def predict_bulk(req: BulkRequest) -> Response:
        """Score many readings in one round trip; one result per reading, in order.

        A reading that fails carries its own ``{status, error}``; the others are scored.
        ``latency_ms`` is given once, for the whole request.
        """
        if len(req.readings) > core.max_bulk_rows:
            raise PayloadTooLarge(f"bulk request has {len(req.readings)} readings; the limit is {core.max_bulk_rows}")
        t0 = time.perf_counter()
        errors, items = await core.score_bulk(ReadingColumns.of_dicts(req.readings))
        elapsed = (time.perf_counter() - t0) * 1e3
        # ``items`` is already a JSON array: splice it in rather than parse and re-encode.
        body = b'{"results":' + items + b',"errors":' + str(errors).encode() + b',"latency_ms":' + \
            orjson.dumps(elapsed) + b"}"
        return Response(body, media_type="application/json")

    async def columns_response(eq: str, power: str | None, version: str | None, columns: dict[str, Any],
                               n: int) -> Response:
        t0 = time.perf_counter()
        status, body = await core.score_columns(eq, power, version, columns, n)
        if status == 200:  # splice the latency in rather than parse and re-encode the body
            body = body[:-1] + b',"latency_ms":' + orjson.dumps((time.perf_counter() - t0) * 1e3) + b"}"
        return Response(body, status_code=status, media_type="application/json")

    @app.post(f"{PREFIX}/predict/columns", response_model=ColumnsResponse, responses=ERRORS,
              dependencies=read_only)
    async def predict_columns(req: ColumnsRequest) -> Response:
        """Score many readings of one equipment sent as columns (one array per feature).

        The fastest bulk form: no per-row objects on either side. Every output array is
        in input order; rows that could not be scored are listed in ``errors``.
        """
        columns, n = to_arrays(req.columns, core.max_bulk_rows)
        return await columns_response(req.equipment_id, req.power, req.model_version, columns, n)

    @app.post(f"{PREFIX}/predict/columns/binary", response_model=ColumnsResponse, responses=ERRORS,
              dependencies=read_only, openapi_extra={"requestBody": {"required": True, "content": {
                  BINARY_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}}})
    async def predict_columns_binary(
        request: Request,
        equipment_id: str = Query(min_length=1, max_length=128, description="Equipment id; every row belongs to it."),
        features: str = Query(min_length=1, max_length=33_000,
                              description="Comma-separated feature names: the order of the columns in the body."),
        power: str | None = Query(default=None, min_length=1, max_length=128,
                                  description="Power class; omitted: chosen per row automatically."),
        model_version: str | None = Query(default=None, min_length=1, max_length=128,
                                          description="Pin a version; omitted: the live version."),
        dtype: str = Query(default="float64", description="float64 or float32, little-endian."),
    ) -> Response:
        """Score many readings of one equipment sent as raw binary columns.

        The body is each feature's values back to back, in the order of ``features``
        (all rows of the first, then all rows of the second, ...), as little-endian
        ``dtype`` (numpy: ``np.stack(cols).astype("<f8").tobytes()``). No JSON is parsed
        on the way in; the answer is the same as ``/predict/columns``.
        """
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != BINARY_MEDIA_TYPE:
            raise UnsupportedMediaType(f"expected Content-Type {BINARY_MEDIA_TYPE}, got {media[:80] or 'none'!r}")
        columns, n = from_binary(await request.body(), features, dtype, core.max_bulk_rows)
        return await columns_response(equipment_id, power, model_version, columns, n)

    @app.get(f"{PREFIX}/bundles", dependencies=read_only)
    async def bundles(equipment_id: str | None = Query(default=None, max_length=128),
                      power: str | None = Query(default=None, max_length=128)) -> Response:
        """Every valid bundle (identity, modalities, features, thresholds, classifier, live flag)."""
        items = [b for b in core.describe()
                 if (equipment_id is None or b["equipment_id"] == equipment_id)
                 and (power is None or b["power"] == power)]
        history = [h for h in await core.live_history()
                   if (equipment_id is None or h["equipment_id"] == equipment_id)
                   and (power is None or h["power"] == power)]
        return json_response({"bundles": items, "history": history})

    @app.post(f"{PREFIX}/sync", response_model=SyncResponse, dependencies=manage)
    async def sync() -> Response:
        """Rescan the bundle root and report what changed."""
        return json_response(await core.sync())

    @app.post(f"{PREFIX}/bundles/upload", dependencies=manage,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/gzip": {"schema": {"type": "string", "format": "binary"}}}}})
    async def upload_bundle(request: Request) -> Response:
        """Install a bundle from a ``.tar.gz`` of its files, then sync. 409 if that version exists."""
        data = await request.body()
        installed = await core.install(data)
        return json_response({"installed": installed, "sync": await core.sync()})

    @app.post(f"{PREFIX}/bundles/{{equipment_id}}/{{power}}/activate", dependencies=manage)
    async def activate_version(equipment_id: str, power: str, body: ActivateRequest) -> Response:
        """Make ``model_version`` live (``pin``: keep it live even when newer versions appear)."""
        return json_response(await core.change_live("activate", equipment_id, power, version=body.model_version,
                                                    pin=body.pin, reason=body.reason))

    @app.post(f"{PREFIX}/bundles/{{equipment_id}}/{{power}}/rollback", dependencies=manage)
    async def rollback_version(equipment_id: str, power: str, body: ChangeRequest) -> Response:
        """Back to the version that was live before the current one (pinned)."""
        return json_response(await core.change_live("rollback", equipment_id, power, reason=body.reason))

    @app.post(f"{PREFIX}/bundles/{{equipment_id}}/{{power}}/unpin", dependencies=manage)
    async def unpin_version(equipment_id: str, power: str, body: ChangeRequest) -> Response:
        """Drop the explicit live version: the newest valid one is live again."""
        return json_response(await core.change_live("unpin", equipment_id, power, reason=body.reason))

    @app.get(f"{PREFIX}/health/live")
    async def live() -> Response:
        """The process answers."""
        return json_response({"status": "ok"})

    ready_answer = Cached(core.ready, HEALTH_CACHE_S)
    stream_answer = Cached(core.stream_health, HEALTH_CACHE_S)

    @app.get(f"{PREFIX}/health/ready")
    async def ready() -> Response:
        """Bundles are loaded and every equipment deployment answers (cached for a second)."""
        ok, detail = await ready_answer()
        return json_response({"status": "ready" if ok else "not ready", **detail}, 200 if ok else 503)

    def _window(start: dt.datetime | None, end: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
        end = end or dt.datetime.now(dt.UTC)
        try:
            start = start or end - dt.timedelta(hours=1)
        except OverflowError:
            raise InvalidQuery("end is too early to look back an hour from: give start as well") from None
        if start.tzinfo is None or end.tzinfo is None:
            raise InvalidQuery("start and end need a timezone (e.g. 2026-11-23T10:00:00Z)")
        if start >= end:
            raise InvalidQuery("start must be before end")
        return start, end

    @app.get(f"{PREFIX}/equipment/{{equipment_id}}/predictions", dependencies=read_only)
    async def predictions(equipment_id: str, start: dt.datetime | None = None, end: dt.datetime | None = None,
                          limit: int = Query(default=1000, ge=1, le=10_000)) -> Response:
        """Stored predictions of one equipment in [start, end) (default: the last hour), newest first."""
        s, e = _window(start, end)
        return json_response({"predictions": await core.history.predictions(equipment_id, s, e, limit)})

    @app.get(f"{PREFIX}/equipment/{{equipment_id}}/readings", dependencies=read_only)
    async def readings(equipment_id: str, start: dt.datetime | None = None, end: dt.datetime | None = None,
                       limit: int = Query(default=1000, ge=1, le=10_000)) -> Response:
        """Stored raw readings of one equipment in [start, end) (default: the last hour), newest first."""
        s, e = _window(start, end)
        return json_response({"readings": await core.history.readings(equipment_id, s, e, limit)})

    @app.get(f"{PREFIX}/alerts", dependencies=read_only)
    async def alerts(equipment_id: str | None = Query(default=None, max_length=128),
                     status: Literal["open", "resolved"] | None = None,
                     limit: int = Query(default=100, ge=1, le=10_000)) -> Response:
        """Alerts, newest first; filter by equipment and status."""
        return json_response({"alerts": await core.history.alerts(equipment_id, status, limit)})

    @app.get(f"{PREFIX}/stream/health")
    async def stream_health() -> Response:
        """State and lag of the stream scorer actors; 503 unless all are running (cached for a second)."""
        health = await stream_answer()
        states = {h.get("state") for h in health.values()}
        status = ("ok" if health and states == {"running"} else
                  "starting" if health and states <= {"running", "starting"} else "degraded")
        return json_response({"status": status, "actors": health}, 200 if status == "ok" else 503)

    @app.exception_handler(ServeMLError)
    async def _serve_ml_error(_: Request, exc: ServeMLError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        problems = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            why = (e.get("ctx") or {}).get("error")  # what the JSON parser said, for a body that is not JSON
            problems.append(f"{loc}: {e.get('msg')}" + (f" ({why})" if isinstance(why, str) else ""))
        body = {"error": "InvalidRequest", "message": "invalid request: " + "; ".join(problems[:20]),
                "detail": [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()[:50]]}
        return json_response(body, 422)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> Response:
        ref = uuid.uuid4().hex[:12]
        log.exception("internal error (ref %s)", ref)
        return json_response({"error": "InternalError", "message": f"internal error (ref {ref})"}, 500)

    app.add_middleware(EdgeMiddleware, metrics=core.metrics, max_bytes=max_request_bytes,
                       routes=frozenset(r.path for r in app.routes), guard=core.guard)  # type: ignore[attr-defined]
    return app
