"""LitServe: the model behind its ``LitAPI`` contract (setup / decode / predict / encode).

LitServe reads every request as JSON (``decode_request`` gets the parsed body), so
single rows and bulk columns both come as JSON: ``{"features": {...}}`` or
``{"columns": {name: [values]}}``. The answer is the model core's JSON, returned as a
ready ``Response`` so that LitServe does not re-encode it. Defaults otherwise: ``WORKERS``
inference worker processes (1 unless given), API server processes as many.
Run: ``python -m serve_ml.bench.peer_apps.litserve_app PORT [WORKERS]``.
"""

import sys
from typing import Any

import litserve as ls
from fastapi.responses import Response

from serve_ml.bench.peer_apps.model import PeerModel


class PeerAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = PeerModel()

    # No annotation on ``request``: LitServe then parses the body as JSON.
    def decode_request(self, request):
        return request

    def predict(self, x: dict[str, Any]) -> bytes:
        if "columns" in x:
            return self.model.score_json_columns(x["columns"])
        return self.model.score_row(x["features"])

    def encode_response(self, output: bytes) -> Response:
        return Response(output, media_type="application/json")


if __name__ == "__main__":
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    server = ls.LitServer(PeerAPI(), accelerator="cpu", workers_per_device=workers)
    server.run(host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", generate_client_file=False)
