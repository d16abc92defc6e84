"""XGBoost fault classifier loaded from JSON (XGBoost's own format; no pickle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xgboost as xgb

from serve_ml.bundles.manifest import Classifier


class FaultClassifier:
    def __init__(self, path: Path, spec: Classifier) -> None:
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

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (rows, classes)."""
        out = self.booster.inplace_predict(x, validate_features=False)
        out = np.asarray(out, dtype=np.float64)
        if out.ndim == 1:  # binary:logistic gives P(class 1) only
            out = np.stack([1.0 - out, out], axis=1)
        return out


def _n_outputs(booster: xgb.Booster) -> int:
    import json

    cfg = json.loads(booster.save_config())
    objective = cfg["learner"]["objective"]["name"]
    if objective.startswith("binary:"):
        return 2
    return int(cfg["learner"]["learner_model_param"]["num_class"])
