"""The model every peer serves: one bundle, scored by serve-ml's own model core.

The bench passes the bundle root and the equipment id and power class in the
environment (``SERVE_ML_PEER_ROOT``, ``SERVE_ML_PEER_EQUIPMENT``,
``SERVE_ML_PEER_POWER``). The classifier runs (``enable_xgb``), as it does in the
serve-ml cluster the bench starts: the dense autoencoder gate and the XGBoost
fault classifier, whatever cascade the bundle's manifest names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.columns import CLASSIFIER_S, dumps, score_columns


class PeerModel:
    """Loaded once per server process; ``score_*`` are what the peers' handlers call."""

    def __init__(self, root: Path | None = None, equipment_id: str | None = None, power: str | None = None) -> None:
        self.root = root or Path(os.environ["SERVE_ML_PEER_ROOT"])
        self.equipment_id = equipment_id or os.environ.get("SERVE_ML_PEER_EQUIPMENT", "press-02")
        self.power = power or os.environ.get("SERVE_ML_PEER_POWER", "7.5kW")
        self.catalog = Catalog.scan(self.root)
        self.catalog.live_bundle(self.equipment_id, self.power)  # fail at start-up, not on the first request

    def score(self, columns: Mapping[str, np.ndarray], n: int) -> dict[str, Any]:
        """The columnar answer (arrays), as serve-ml's ``/predict/columns`` builds it."""
        out = score_columns(self.catalog, self.equipment_id, self.power, None, columns, n, enable_xgb=True)
        out.pop(CLASSIFIER_S, None)
        return out

    def score_row(self, features: Mapping[str, float]) -> bytes:
        """One reading -> the JSON answer."""
        return dumps(self.score({f: np.array([float(v)]) for f, v in features.items()}, 1))

    def score_json_columns(self, columns: Mapping[str, Sequence[float]]) -> bytes:
        """Columns as JSON lists -> the JSON answer."""
        arrays = {f: np.asarray(v, dtype=np.float64) for f, v in columns.items()}
        return dumps(self.score(arrays, len(next(iter(arrays.values())))))

    def score_binary(self, body: bytes, features: str) -> bytes:
        """Feature-major little-endian float64 (serve-ml's binary columnar body) -> the JSON answer."""
        names = features.split(",")
        matrix = np.frombuffer(body, dtype="<f8").reshape(len(names), -1)
        return dumps(self.score(dict(zip(names, matrix, strict=True)), matrix.shape[1]))

    def score_matrix(self, matrix: np.ndarray, features: Sequence[str]) -> dict[str, Any]:
        """Row-major ``[n, features]`` (a V2 tensor) -> the columnar answer (arrays)."""
        return self.score({f: np.ascontiguousarray(matrix[:, j]) for j, f in enumerate(features)}, matrix.shape[0])
