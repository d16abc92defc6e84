"""Scoring: one reading, bulk rows, columns, binary columns."""

from __future__ import annotations

import time
from operator import methodcaller
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from serve_ml.bundles.batch import Reading, ReadingColumns
from serve_ml.bundles.columns import from_binary, to_arrays
from serve_ml.core.errors import FeatureError, PayloadTooLarge, ServeMLError, UnsupportedMediaType
from serve_ml.core.reading import MAX_FEATURES, MAX_NAME_CHARS
from serve_ml.deployments.api.body import OrjsonRoute
from serve_ml.deployments.api.deps import (
    BINARY_ERRORS,
    PREDICT_ERRORS,
    READ_ONLY,
    Core,
    CoreDep,
    error_response,
    json_response,
)
from serve_ml.deployments.edge import PREFIX
from serve_ml.deployments.http_store import stored_items
from serve_ml.deployments.schemas import (
    BulkRequest,
    BulkResponse,
    ColumnsRequest,
    ColumnsResponse,
    PredictRequest,
    PredictResponse,
)
from serve_ml.deployments.wire import merge_items
from serve_ml.operations.thresholds import breaches

BINARY_MEDIA_TYPE = "application/octet-stream"

router = APIRouter(prefix=PREFIX, route_class=OrjsonRoute)


def _reading(r: PredictRequest) -> Reading:
    if r.readings is None:
        return Reading(r.equipment_id, r.features, r.power, r.model_version)  # type: ignore[arg-type]
    # a window: one array per feature, oldest first (bundles.batch scores it as one row)
    window = {f: [row[f] for row in r.readings] for f in r.readings[-1]}
    return Reading(r.equipment_id, window, r.power, r.model_version)  # type: ignore[arg-type]

@router.post("/predict", response_model=PredictResponse, responses=PREDICT_ERRORS, dependencies=READ_ONLY)
async def predict(core: CoreDep, req: PredictRequest) -> Response:
    """Score one reading against its equipment's bundle."""
    return await predict_one(core, req)


async def predict_one(core: Core, req: PredictRequest) -> Response:
    """The answer to one reading; also served without FastAPI's routing (``api.hot``)."""
    t0 = time.perf_counter()
    (res,) = await core.score([_reading(req)])
    if isinstance(res, ServeMLError):
        return error_response(res)
    last = req.last()
    if core.http_store is not None:
        await core.http_store.store(stored_items([{"equipment_id": req.equipment_id, "features": last}], [res]))
    book = core.book.current()
    if book and book.applied(req.equipment_id):
        res["thresholds"] = breaches(book, req.equipment_id, last)
    res["latency_ms"] = (time.perf_counter() - t0) * 1e3
    return json_response(res)

@router.post("/predict/bulk", response_model=BulkResponse, responses=PREDICT_ERRORS, dependencies=READ_ONLY)
async def predict_bulk(core: CoreDep, req: BulkRequest) -> Response:
    """Score many readings in one round trip; one result per reading, in order.

    A reading that fails carries its own ``{status, error}``; the others are scored.
    ``latency_ms`` is given once, for the whole request.
    """
    if len(req.readings) > core.max_bulk_rows:
        raise PayloadTooLarge(f"bulk request has {len(req.readings)} readings; the limit is {core.max_bulk_rows}")
    t0 = time.perf_counter()
    readings: list[Any] = req.readings
    if any(map(_IS_WINDOW, readings)):
        errors, items, readings = await _score_with_windows(core, readings)
    else:
        errors, items = await core.score_bulk(ReadingColumns.of_dicts(readings))
    if core.http_store is not None:
        await core.http_store.store(stored_items(readings, orjson.loads(items)))
    elapsed = (time.perf_counter() - t0) * 1e3
    # ``items`` is already a JSON array: splice it in rather than parse and re-encode.
    book = core.book.current()
    limits = b""
    if book:
        limited = {e for e in {r["equipment_id"] for r in readings} if book.applied(e)}
        if limited:
            found = [{**b, "index": i} for i, r in enumerate(readings) if r["equipment_id"] in limited
                     for b in breaches(book, r["equipment_id"], r["features"])]
            limits = b',"thresholds":' + orjson.dumps(found)
    body = b'{"results":' + items + b',"errors":' + str(errors).encode() + limits + b',"latency_ms":' + \
        orjson.dumps(elapsed) + b"}"
    return Response(body, media_type="application/json")

_IS_WINDOW = methodcaller("__contains__", "readings")


async def _score_with_windows(core: Core, items: list[Any]) -> tuple[int, bytes, list[dict[str, Any]]]:
    """A bulk request with windows: each window scored as one row (its features as
    arrays, oldest first), plain readings apart (a scored group is all rows or all
    windows); the results merged back in order. Also returns each item as its last
    reading, for thresholds and storing."""
    as_rows, last, windows, plain = [], [], [], []
    for i, r in enumerate(items):
        if "readings" in r:
            rows = r["readings"]
            names = rows[-1].keys()
            if any(row.keys() != names for row in rows):
                raise FeatureError({f"readings[{i}]": "every reading of a window needs the same feature names"})
            as_rows.append({**r, "features": {f: [row[f] for row in rows] for f in names}})
            last.append({**r, "features": rows[-1]})
            windows.append(i)
        else:
            as_rows.append(r)
            last.append(r)
            plain.append(i)
    parts = [(idx, await core.score_bulk(ReadingColumns.of_dicts([as_rows[i] for i in idx])))
             for idx in (plain, windows) if idx]
    if len(parts) == 1:
        return parts[0][1][0], parts[0][1][1], last
    errors = sum(e for _, (e, _) in parts)
    return errors, merge_items(len(items), [(idx, out) for idx, (_, out) in parts]), last


async def columns_response(core: Core, eq: str, power: str | None, version: str | None, columns: dict[str, Any],
                           n: int) -> Response:
    t0 = time.perf_counter()
    status, body = await core.score_columns(eq, power, version, columns, n)
    if status == 200:  # splice the latency in rather than parse and re-encode the body
        body = body[:-1] + b',"latency_ms":' + orjson.dumps((time.perf_counter() - t0) * 1e3) + b"}"
    return Response(body, status_code=status, media_type="application/json")

@router.post("/predict/columns", response_model=ColumnsResponse, responses=PREDICT_ERRORS,
          dependencies=READ_ONLY)
async def predict_columns(core: CoreDep, req: ColumnsRequest) -> Response:
    """Score many readings of one equipment sent as columns (one array per feature).

    The fastest bulk form: no per-row objects on either side. Every output array is
    in input order; rows that could not be scored are listed in ``errors``.
    """
    columns, n = to_arrays(req.columns, core.max_bulk_rows)
    return await columns_response(core, req.equipment_id, req.power, req.model_version, columns, n)

@router.post("/predict/columns/binary", response_model=ColumnsResponse, responses=BINARY_ERRORS,
          dependencies=READ_ONLY, openapi_extra={"requestBody": {"required": True, "content": {
              BINARY_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}}})
async def predict_columns_binary(core: CoreDep,
    request: Request,
    equipment_id: str = Query(min_length=1, max_length=MAX_NAME_CHARS,
                              description="Equipment id; every row belongs to it."),
    features: str = Query(min_length=1, max_length=MAX_FEATURES * (MAX_NAME_CHARS + 1),
                          description="Comma-separated feature names: the order of the columns in the body."),
    power: str | None = Query(default=None, min_length=1, max_length=MAX_NAME_CHARS,
                              description="Power class; omitted: chosen per row automatically."),
    model_version: str | None = Query(default=None, min_length=1, max_length=MAX_NAME_CHARS,
                                      description="Pin a version; omitted: the live version."),
    dtype: str = Query(default="float64", description="float64 or float32, little-endian."),
    steps: int = Query(default=1, ge=1, le=4096, description="Readings per row: above 1, each row is a window "
                       "of that many readings, oldest first (sequence bundles)."),
) -> Response:
    """Score many readings of one equipment sent as raw binary columns.

    The body is each feature's values back to back, in the order of ``features``
    (all rows of the first, then all rows of the second, ...), as little-endian
    ``dtype`` (numpy: ``np.stack(cols).astype("<f8").tobytes()``). With ``steps`` above
    1 each row is a window: a feature's block is rows x steps values, row by row,
    oldest step first. No JSON is parsed on the way in; the answer is the same as
    ``/predict/columns``.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != BINARY_MEDIA_TYPE:
        raise UnsupportedMediaType(f"expected Content-Type {BINARY_MEDIA_TYPE}, got {media[:80] or 'none'!r}")
    columns, n = from_binary(await request.body(), features, dtype, core.max_bulk_rows, steps)
    return await columns_response(core, equipment_id, power, model_version, columns, n)
