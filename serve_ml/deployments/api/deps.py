"""What every route shares: the core it talks to, the token checks, the error
answers it documents, and the JSON responses it sends (typed FastAPI dependencies,
as the FastAPI full-stack template's ``deps.py``)."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

import orjson
from fastapi import Depends, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serve_ml.bundles.batch import Reading, ReadingColumns, Result
from serve_ml.core.errors import Overloaded, ServeMLError
from serve_ml.deployments.auth import TokenGuard
from serve_ml.deployments.http_store import HttpStore
from serve_ml.deployments.live import LiveHub
from serve_ml.deployments.schemas import ErrorBody, V2ErrorBody
from serve_ml.operations.dead_letters import DeadLetters
from serve_ml.operations.follow import IngressBook
from serve_ml.operations.service import Operations
from serve_ml.scoring.history import History
from serve_ml.scoring.management import Management
from serve_ml.scoring.metrics import Metrics

_WHY = {
    400: "The request cannot be served as asked: e.g. a reading whose power fits no single power "
         "class, or an archive that is not a bundle.",
    401: "No bearer token, or not a Bearer header, where one is needed.",
    403: "The token is not one this route accepts (or management / operations changes are disabled).",
    404: "No such equipment, power class, version or bundle.",
    409: "The bundle version already exists, or there is nothing to roll back to.",
    413: "The body or the row count is over the limit.",
    415: "The body's Content-Type is not the one this route reads.",
    422: "The request does not validate: malformed JSON, a missing or invalid field, an unknown or "
         "non-finite feature. The message names each problem.",
    429: "Over this client's rate limit, when one is configured (with Retry-After).",
    503: "Overloaded (with Retry-After) or not ready.",
    504: "The scoring or the database took longer than the request timeout.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route documents, each with the project's own error body
    (string keys: FastAPI then does not add its own HTTPValidationError for 422)."""
    return {str(s): {"model": ErrorBody, "description": _WHY[s]} for s in statuses}


def v2_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """As :func:`errors`, with the Open Inference Protocol's error body."""
    return {str(s): {"model": V2ErrorBody, "description": _WHY[s]} for s in statuses}


EDGE = (413, 503, 504)  # any route: the edge's body limit, overload, timeouts
READ_ERRORS = errors(401, 403, 422, *EDGE)
PREDICT_ERRORS = errors(400, 401, 403, 404, 422, 429, *EDGE)
BINARY_ERRORS = errors(400, 401, 403, 404, 415, 422, 429, *EDGE)
MANAGE_ERRORS = errors(401, 403, 404, 409, 422, *EDGE)
# Declared so /docs has an Authorize button; the token itself is checked by TokenGuard
# (at the edge before the body is read, and again by the route's dependency).
BEARER = HTTPBearer(auto_error=False, description="Admin token for management; read token, if set, for the rest.")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


def bearer_header(creds: HTTPAuthorizationCredentials | None) -> str | None:
    return None if creds is None else f"{creds.scheme} {creds.credentials}"


class Core(Protocol):
    """What the API needs from whoever does the work (Serve graph or in-process)."""

    metrics: Metrics
    max_bulk_rows: int
    history: History
    guard: TokenGuard
    management: Management  # activate/rollback/unpin/upload/sync, the same for every core
    operations: Operations  # equipment, thresholds, status, alarms, aggregates
    live: LiveHub  # WebSocket pushes
    book: IngressBook  # raw thresholds applied to HTTP predictions
    http_store: HttpStore | None  # stores HTTP predictions through the stream (None: they are not stored)
    dead_letters: DeadLetters | None  # the stream's refused records (None: no broker)

    async def score(self, readings: list[Reading]) -> list[Result]: ...
    async def score_bulk(self, readings: ReadingColumns) -> tuple[int, bytes]: ...
    async def score_columns(self, eq: str, power: str | None, version: str | None,
                            columns: dict[str, Any], n: int) -> tuple[int, bytes]: ...
    def describe(self) -> list[dict[str, Any]]: ...
    async def ready(self) -> tuple[bool, dict[str, Any]]: ...
    async def stream_health(self) -> dict[str, Any]: ...
    async def deployments(self) -> dict[str, Any]: ...


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_response(exc: ServeMLError) -> Response:
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Overloaded) else None
    return json_response(exc.to_dict(), exc.status_code, headers)



async def get_core(request: Request) -> Core:
    # async on purpose: FastAPI runs a plain-def dependency on a worker thread, and a
    # thread hop per request cost ~0.4 ms here, more than scoring a reading.
    return request.app.state.core


CoreDep = Annotated[Core, Depends(get_core)]


# The request itself rather than CoreDep: one dependency fewer to solve per request
# (measured in process: ~10 µs of a ~500 µs predict).
async def require_admin(request: Request, creds: Bearer) -> None:
    request.app.state.core.guard.admin(bearer_header(creds))


async def require_read(request: Request, creds: Bearer) -> None:
    request.app.state.core.guard.read(bearer_header(creds))


async def require_operator(request: Request, creds: Bearer) -> str:
    """The role acting (operator or admin), for the audit trail."""
    return request.app.state.core.guard.operator(bearer_header(creds)).role


READ_ONLY = [Depends(require_read)]
MANAGE = [Depends(require_admin)]
OperatorRole = Annotated[str, Depends(require_operator)]
OPERATE_ERRORS = errors(401, 403, 404, 422, *EDGE)
