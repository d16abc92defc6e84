"""The remaining-useful-life head: an XGBoost regressor loaded from JSON (no pickle),
its predictions clipped to ``[0, cap]`` and given an interval from held-out residuals."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serve_ml.bundles.manifest import RulHead


class RulRegressor:
    def __init__(self, path: Path, spec: RulHead) -> None:
        import xgboost as xgb  # here, not at import: processes that load no head skip ~1 s

        booster = xgb.Booster()
        booster.load_model(str(path))
        booster.set_param({"nthread": 1})
        if booster.num_features() != len(spec.features):
            raise ValueError(f"{spec.file} expects {booster.num_features()} features but the manifest lists "
                             f"{len(spec.features)}")
        self.booster = booster
        self.spec = spec

    def predict(self, x: np.ndarray) -> np.ndarray:
        """RUL per row, in ``spec.unit``, within ``[0, cap]``."""
        out = np.asarray(self.booster.inplace_predict(x, validate_features=False), dtype=np.float64).reshape(len(x))
        return np.clip(out, 0.0, self.spec.cap if self.spec.cap is not None else np.inf)

    def bounds(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The interval around each predicted value (never below 0 nor above the cap)."""
        hi = self.spec.cap if self.spec.cap is not None else np.inf
        return (np.clip(value + self.spec.interval.lower, 0.0, hi),
                np.clip(value + self.spec.interval.upper, 0.0, hi))
