"""Plain FastAPI on uvicorn: what a team would write by hand around the same model.

Single row as JSON; bulk as serve-ml's binary columnar body (raw float64, feature
order in the query), the fastest form a hand-written endpoint would take.
Run: ``uvicorn fastapi_app:app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from serve_ml.bench.peer_apps.model import PeerModel

_model: list[PeerModel] = []


@asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    _model.append(PeerModel())
    yield


app = FastAPI(lifespan=_lifespan)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
async def predict(body: dict[str, Any]) -> Response:
    return Response(_model[0].score_row(body["features"]), media_type="application/json")


@app.post("/predict/columns/binary")
async def predict_binary(request: Request, features: str) -> Response:
    return Response(_model[0].score_binary(await request.body(), features), media_type="application/json")
