"""MLServer: the model as a custom runtime (``MLModel``), spoken to in Open Inference
Protocol v2.

One input tensor ``[n, features]`` (FP64), its feature order in the input's
``parameters.features`` (comma-separated); outputs ``anomaly`` (BOOL), ``score``
(FP64) and, where the classifier ran, ``fault_probabilities`` (FP64 ``[n, classes]``).
MLServer's REST server has no binary tensor extension (1.7: only its batch client
knows ``binary_data_size``), so V2 JSON is its fastest REST form for bulk.
The bench writes ``settings.json`` and ``model-settings.json`` and runs
``mlserver start``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from serve_ml.bench.peer_apps.model import PeerModel


class PeerRuntime(MLModel):
    async def load(self) -> bool:
        uri = self.settings.parameters.uri if self.settings.parameters else None
        self.model = PeerModel(Path(uri) if uri else None)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        tensor = payload.inputs[0]
        matrix = NumpyCodec.decode_input(tensor)
        params = tensor.parameters.model_dump() if tensor.parameters else {}
        order = params.get("features")
        if not isinstance(order, str):
            raise ValueError("the input tensor's parameters.features must name its columns, comma-separated")
        features = order.split(",")
        out = self.model.score_matrix(np.asarray(matrix, dtype=np.float64), features)
        outputs = [NumpyCodec.encode_output("anomaly", np.asarray(out["anomaly"], dtype=bool)),
                   NumpyCodec.encode_output("score", np.asarray(out["score"], dtype=np.float64))]
        probs = (out.get("classifier") or {}).get("probabilities")
        if probs is not None:
            outputs.append(NumpyCodec.encode_output("fault_probabilities", np.asarray(probs, dtype=np.float64)))
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=outputs)
