"""Training the remaining-useful-life head from run-to-failure data.

Every unit runs until it fails, so a row's RUL is its unit's last time minus its
own, capped (by default at 125: the usual piecewise-linear convention, since early
in life nothing on the sensors tells 300 cycles from 200). The regressor is XGBoost
over the reading's own features; it learns the units of the training block, its
interval comes from the residuals on the calibration block's units, and its figures
(RMSE, MAE, the NASA asymmetric score, the interval's coverage) from the evaluation
block's units, which it never saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from serve_ml.bundles.datasets import Ordering
from serve_ml.bundles.manifest import RulPairs

DEGRADING = "degrading"


class RulSpec(BaseModel):
    """The RUL head to build (``BuildSpec.rul``)."""

    model_config = ConfigDict(extra="forbid")

    unit: Literal["cycles", "hours", "minutes"] = Field(default="cycles", description="Unit of the time column.")
    cap: float | None = Field(default=125.0, gt=0, description="Cap on the target; None: uncapped.")
    alert_below: float | None = Field(default=None, ge=0, description="Manifest rul.alert_below.")
    features: list[str] | None = Field(default=None, description="Regressor inputs; default: the gates' and "
                                       "the classifier's features.")
    coverage: float = Field(default=0.8, gt=0, lt=1, description="Interval coverage aimed at.")
    depth: int = Field(default=4, ge=1, le=12, description="XGBoost max_depth.")
    rounds: int = Field(default=300, ge=1, le=5000, description="XGBoost boosting rounds.")


def rul_target(ordering: Ordering | None) -> np.ndarray:
    """``last time of the row's unit - the row's time``, uncapped."""
    if ordering is None or ordering.unit is None or ordering.time is None:
        raise ValueError("a RUL head needs run-to-failure data: a unit column (--unit-column) and a time or "
                         "cycle column (--time-column)")
    units, unit_of = np.unique(ordering.unit, return_inverse=True)
    last = np.full(len(units), -np.inf)
    np.maximum.at(last, unit_of, ordering.time)
    return last[unit_of] - ordering.time


def rul_labels(labels: np.ndarray, target: np.ndarray, spec: RulSpec, normal: str) -> np.ndarray:
    """Rows on the healthy plateau (RUL at or above the cap) are normal: the gates
    learn them. The others keep their own label when it names a fault, else are
    ``degrading``."""
    horizon = spec.cap if spec.cap is not None else 125.0
    return np.where(target >= horizon, normal, np.where(labels == normal, DEGRADING, labels))


def nasa_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """The PHM08 / C-MAPSS score: late predictions (too high) cost more than early ones."""
    d = pred - truth
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(d / 10.0) - 1.0)))


def rul_figures(pred: np.ndarray, truth: np.ndarray, lower: np.ndarray | None = None,
                upper: np.ndarray | None = None) -> dict[str, Any]:
    """RMSE, MAE, NASA score (and the interval's coverage) of predictions against truth."""
    d = pred - truth
    out: dict[str, Any] = {"rows": len(truth), "rmse": round(float(np.sqrt(np.mean(d ** 2))), 3),
                           "mae": round(float(np.mean(np.abs(d))), 3), "nasa_score": round(nasa_score(pred, truth), 1)}
    if lower is not None and upper is not None:
        out["interval_coverage"] = round(float(np.mean((truth >= lower) & (truth <= upper))), 4)
    return out


def fit_rul_head(spec: RulSpec, features: list[str], columns: dict[str, np.ndarray], target: np.ndarray,
                 part: np.ndarray, bdir: Path, *, seed: int
                 ) -> tuple[dict[str, Any], dict[str, Any], RulPairs]:
    """Train on part 0, calibrate the interval on part 1, measure on part 2; write
    ``rul.json``; return the manifest's ``rul`` block, the figures, and (a sample
    of) the evaluation block's truth and predictions."""
    import xgboost as xgb

    y = np.minimum(target, spec.cap) if spec.cap is not None else target
    x = np.column_stack([columns[f] for f in features])
    params = {"objective": "reg:squarederror", "max_depth": spec.depth, "eta": 0.05, "subsample": 0.8,
              "seed": seed, "nthread": 1, "tree_method": "hist"}
    train, calib, test = (np.flatnonzero(part == b) for b in (0, 1, 2))
    booster = xgb.train(params, xgb.DMatrix(x[train], label=y[train]), num_boost_round=spec.rounds)
    booster.save_model(str(bdir / "rul.json"))
    hi = spec.cap if spec.cap is not None else np.inf

    def predict(rows: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(booster.predict(xgb.DMatrix(x[rows]))), 0.0, hi)

    residual = y[calib] - predict(calib)
    q_lo, q_hi = np.quantile(residual, [(1 - spec.coverage) / 2, (1 + spec.coverage) / 2])
    interval = {"lower": min(0.0, float(q_lo)), "upper": max(0.0, float(q_hi)), "coverage": spec.coverage}
    pred = predict(test)
    lower, upper = np.clip(pred + interval["lower"], 0, hi), np.clip(pred + interval["upper"], 0, hi)
    figures = {"rul_eval": f"{len(np.unique(part))} blocks of whole units: trained on {len(train)} rows, interval "
                           f"from {len(calib)}, figures on {len(test)} rows of units it never saw",
               **{f"rul_{k}": v for k, v in rul_figures(pred, y[test], lower, upper).items()}}
    head = {"kind": "xgboost_rul", "file": "rul.json", "features": features, "unit": spec.unit, "cap": spec.cap,
            "interval": interval, "alert_below": spec.alert_below}
    pick = np.linspace(0, len(test) - 1, min(len(test), 2000)).astype(int) if len(test) else np.array([], int)
    pairs = RulPairs(truth=y[test][pick].tolist(), predicted=pred[pick].tolist(), unit=spec.unit)
    return head, figures, pairs
