"""Open Inference Protocol v2 under ``/v2``, for clients written for KServe, Triton
or MLServer (``tritonclient.http`` among them). The model name is the equipment id;
its versions are the bundle versions. The codec is ``api/oip.py``; errors have the
protocol's ``{"error": message}`` body (translated in ``api/__init__.py``)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

import serve_ml
from serve_ml.core.errors import EquipmentNotFound, VersionNotFound
from serve_ml.deployments.api import oip
from serve_ml.deployments.api.body import OrjsonRoute
from serve_ml.deployments.api.deps import READ_ONLY, Core, CoreDep, json_response, v2_errors
from serve_ml.deployments.edge import V2_PREFIX, v2_error_body

router = APIRouter(prefix=V2_PREFIX, route_class=OrjsonRoute, tags=["Open Inference Protocol v2"])
INFER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object"}},
    oip.BINARY_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}}}


@router.get("")
async def server_metadata() -> Response:
    """Server name, version and the protocol extensions it speaks."""
    return json_response({"name": "serve-ml", "version": serve_ml.__version__,
                          "extensions": ["binary_tensor_data"]})


@router.get("/health/live")
async def server_live() -> Response:
    """The process answers."""
    return json_response({"live": True})


@router.get("/health/ready", responses=v2_errors(503))
async def server_ready(request: Request) -> Response:
    """Bundles are loaded and every equipment deployment answers (cached for a second)."""
    ok, _detail = await request.app.state.ready_answer()
    return json_response({"ready": ok}, 200 if ok else 503)


def _metadata(core: Core, name: str, version: str | None) -> dict[str, Any]:
    return oip.model_metadata(name, _bundles(core, name, version),
                              classifier_enabled=core.management.service.enable_xgb)


def _bundles(core: Core, name: str, version: str | None) -> list[dict[str, Any]]:
    described = core.describe()
    mine = [b for b in described if b["equipment_id"] == name]
    if not mine:
        raise EquipmentNotFound(name, sorted({b["equipment_id"] for b in described}))
    if version is not None:
        chosen = [b for b in mine if b["model_version"] == version]
        if not chosen:
            raise VersionNotFound(name, ",".join(sorted({b["power"] for b in mine})), version,
                                  sorted({b["model_version"] for b in mine}))
        return chosen
    return mine


@router.get("/models/{name}", dependencies=READ_ONLY, responses=v2_errors(401, 403, 404, 422))
async def model_metadata(core: CoreDep, name: str) -> Response:
    """Inputs (one FP64 tensor per feature), outputs and versions of an equipment's model."""
    return json_response(_metadata(core, name, None))


@router.get("/models/{name}/versions/{version}", dependencies=READ_ONLY, responses=v2_errors(401, 403, 404, 422))
async def model_version_metadata(core: CoreDep, name: str, version: str) -> Response:
    """Metadata of one bundle version."""
    return json_response(_metadata(core, name, version))


@router.get("/models/{name}/ready", dependencies=READ_ONLY, responses=v2_errors(401, 403, 404, 422))
async def model_ready(core: CoreDep, name: str) -> Response:
    """200 when the equipment has a live bundle."""
    return json_response({"name": name, "ready": any(b["live"] for b in _bundles(core, name, None))})


@router.get("/models/{name}/versions/{version}/ready", dependencies=READ_ONLY, responses=v2_errors(401, 403, 404, 422))
async def model_version_ready(core: CoreDep, name: str, version: str) -> Response:
    """200 when that version is loaded (it can be scored, live or pinned)."""
    _bundles(core, name, version)
    return json_response({"name": name, "version": version, "ready": True})


@router.post("/models/{name}/infer", dependencies=READ_ONLY, openapi_extra=INFER_BODY,
             responses=v2_errors(400, 401, 403, 404, 413, 422, 429, 503, 504))
async def infer(core: CoreDep, request: Request, name: str) -> Response:
    """Score rows: one tensor per feature (or ``[n, features]`` with the order in
    ``parameters.features``); JSON or the binary tensor extension. The live bundle of
    the row's power class scores it; ``parameters.power`` fixes the power class."""
    return await _infer(core, request, name, None)


@router.post("/models/{name}/versions/{version}/infer", dependencies=READ_ONLY, openapi_extra=INFER_BODY,
             responses=v2_errors(400, 401, 403, 404, 413, 422, 429, 503, 504))
async def infer_version(core: CoreDep, request: Request, name: str, version: str) -> Response:
    """Score rows with one bundle version."""
    return await _infer(core, request, name, version)


async def _infer(core: Core, request: Request, name: str, version: str | None) -> Response:
    doc, tail = oip.split_body(await request.body(), request.headers.get(oip.HEADER_LENGTH))
    # the catalog is described only for a matrix that names no features (not per request)
    req = oip.parse_infer(doc, tail, max_rows=core.max_bulk_rows, model_features=lambda: [
        i["name"] for i in _metadata(core, name, version)["inputs"]])
    status, body = await core.score_columns(name, req.power, version or req.model_version, req.columns, req.n)
    result = orjson.loads(body)
    if status != 200:
        return json_response(v2_error_body(result), status)
    payload, header_length = oip.encode_response(name, req, result)
    if header_length is None:
        return Response(payload, media_type="application/json")
    return Response(payload, media_type=oip.BINARY_MEDIA_TYPE,
                    headers={"Inference-Header-Content-Length": str(header_length)})
