"""BentoML: the model as a ``@bentoml.service`` with two ``@bentoml.api`` endpoints.

BentoML validates each API's JSON body against the method's signature (pydantic):
``/predict`` takes ``{"features": {name: value}}``, ``/predict_columns`` takes
``{"columns": {name: [values]}}``. Answers are the model core's JSON as a ready
``Response``, which BentoML passes through (the signature says ``Any``:
BentoML builds a pydantic model of it, and a Response is not one). ``SERVE_ML_PEER_WORKERS`` worker processes
(BentoML's default is one).
Run: ``bentoml serve bentoml_service:PeerScorer --port PORT``.
"""

import os
from typing import Any

import bentoml
from starlette.responses import Response

from serve_ml.bench.peer_apps.model import PeerModel


@bentoml.service(workers=int(os.environ.get("SERVE_ML_PEER_WORKERS", "1")))
class PeerScorer:
    def __init__(self) -> None:
        self.model = PeerModel()

    @bentoml.api
    def predict(self, features: dict[str, float]) -> Any:  # a Response, passed through; pydantic cannot describe one
        return Response(self.model.score_row(features), media_type="application/json")

    @bentoml.api
    def predict_columns(self, columns: dict[str, list[float]]) -> Any:  # a Response, passed through; pydantic cannot describe one
        return Response(self.model.score_json_columns(columns), media_type="application/json")
