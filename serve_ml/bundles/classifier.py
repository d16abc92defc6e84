"""XGBoost fault classifier loaded from JSON (XGBoost's own format; no pickle)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from serve_ml.bundles.manifest import Classifier

if TYPE_CHECKING:
    import xgboost as xgb


class FaultClassifier:
    def __init__(self, path: Path, spec: Classifier) -> None:
        import xgboost as xgb  # here, not at import: processes that load no head skip ~1 s

        booster = xgb.Booster()
        booster.load_model(str(path))
        booster.set_param({"nthread": 1})
        n_out = _n_outputs(booster)
        if n_out != len(spec.classes):
            raise ValueError(
                f"xgb.json predicts {n_out} classes but the manifest lists {len(spec.classes)}"
            )
        if booster.num_features() != len(spec.features):
            raise ValueError(
                f"xgb.json expects {booster.num_features()} features but the manifest lists "
                f"{len(spec.features)}"
            )
        self.booster = booster
        self.spec = spec
        self.classes = np.asarray(spec.classes)
        self._normal = spec.classes.index(spec.normal_class)
        self._thresholds: np.ndarray | None = None
        if spec.fault_thresholds is not None:
            # the normal class never qualifies by threshold; unlisted faults keep 0.5
            t = np.array([spec.fault_thresholds.get(c, 0.5) for c in spec.classes])
            t[self._normal] = np.inf
            self._thresholds = t

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (rows, classes)."""
        out = self.booster.inplace_predict(x, validate_features=False)
        out = np.asarray(out, dtype=np.float64)
        if out.ndim == 1:  # binary:logistic gives P(class 1) only
            out = np.stack([1.0 - out, out], axis=1)
        return out

    def labels(self, probs: np.ndarray) -> np.ndarray:
        """Class index per row. Without ``fault_thresholds``: the most probable class.
        With them: the most probable fault class among those at or above their
        threshold, else the normal class. NaN probabilities never win."""
        p = np.nan_to_num(probs, nan=-1.0)
        if self._thresholds is None:
            return p.argmax(axis=1)
        over = np.where(p >= self._thresholds, p, -np.inf)
        best = over.argmax(axis=1)
        return np.where(np.isfinite(over[np.arange(len(p)), best]), best, self._normal)


def _n_outputs(booster: xgb.Booster) -> int:
    import json

    cfg = json.loads(booster.save_config())
    objective = cfg["learner"]["objective"]["name"]
    if objective.startswith("binary:"):
        return 2
    return int(cfg["learner"]["learner_model_param"]["num_class"])
