"""The single-row predict without FastAPI's router: the one route where its layers
(routing, dependency solving, exception middleware) cost as much as the scoring.

A ``POST /predict`` whose JSON body is a valid ``PredictRequest`` (the same pydantic
model, validated from the raw bytes) is answered here by the route's own function,
:func:`~serve_ml.deployments.api.routes.predict.predict_one`. Anything else (a body
the model refuses, another content type) goes on to FastAPI untouched, so every
refusal still gets the route's own 422 and documented body. It sits inside the edge
middleware: the token, the rate limit, the size limit and the metrics are the
edge's, as for every route (``edge.gate`` requires a read token for ``/predict``).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from serve_ml.core.errors import ServeMLError
from serve_ml.deployments.api.deps import Core, error_response
from serve_ml.deployments.api.routes.predict import predict_one
from serve_ml.deployments.edge import PREFIX, replaying
from serve_ml.deployments.schemas import PredictRequest

PREDICT = f"{PREFIX}/predict"


class HotRoutes:
    def __init__(self, app: Any, *, core: Core) -> None:
        self.app, self.core = app, core

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != PREDICT or scope["method"] != "POST" or not _json(scope):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # client went away
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        try:
            req = PredictRequest.model_validate_json(body)
        except ValidationError:
            await self.app(scope, replaying(body, receive), send)
            return
        try:
            response = await predict_one(self.core, req)
        except ServeMLError as exc:
            response = error_response(exc)
        await response(scope, receive, send)


def _json(scope: dict) -> bool:
    for k, v in scope.get("headers", ()):
        if k == b"content-type":
            return v.split(b";", 1)[0].strip().lower() == b"application/json"
    return False
