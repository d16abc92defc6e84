"""How a gate's threshold is set from the reconstruction errors of held-out normal
rows. The rule and its parameters are recorded in the manifest beside the value.

* ``quantile``: the ``q`` quantile of the errors (e.g. 0.995: about 0.5 % of normal
  rows alarm).
* ``quantile_factor``: that quantile times ``factor`` (> 1 widens the margin for
  data that drifts after training).
* ``pot``, peaks over threshold (extreme value theory, as in Siffer et al., "Anomaly
  detection in streams with extreme value theory", KDD 2017): the errors above the
  ``q`` quantile are fitted with a generalised Pareto distribution, and the
  threshold is where that tail leaves a probability of ``risk`` per row. It reaches
  risks far below ``1 / rows`` that a plain quantile cannot, from a few hundred rows.
  The fit is by the method of moments: closed form, and stable on the few hundred
  peaks a calibration set gives.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

MIN_PEAKS = 10


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Quantile(_Rule):
    rule: Literal["quantile"] = "quantile"
    q: float = Field(default=0.995, gt=0.5, lt=1.0, description="Quantile of held-out normal errors.")

    def threshold(self, errors: np.ndarray) -> float:
        return float(np.quantile(errors, self.q))


class QuantileFactor(_Rule):
    rule: Literal["quantile_factor"] = "quantile_factor"
    q: float = Field(default=0.99, gt=0.5, lt=1.0, description="Quantile of held-out normal errors.")
    factor: float = Field(default=1.5, gt=0, le=100, description="Multiplier on that quantile.")

    def threshold(self, errors: np.ndarray) -> float:
        return float(np.quantile(errors, self.q)) * self.factor


class PeaksOverThreshold(_Rule):
    rule: Literal["pot"] = "pot"
    q: float = Field(default=0.98, gt=0.5, lt=1.0, description="Quantile where the tail (the peaks) starts.")
    risk: float = Field(default=1e-4, gt=0, lt=0.5, description="Probability per normal row of an alarm.")

    def threshold(self, errors: np.ndarray) -> float:
        errors = np.asarray(errors, dtype=np.float64)
        t = float(np.quantile(errors, self.q))
        peaks = errors[errors > t] - t
        if len(peaks) < MIN_PEAKS:
            raise ValueError(f"peaks over threshold needs at least {MIN_PEAKS} errors above the {self.q} quantile; "
                             f"got {len(peaks)} of {len(errors)} (more calibration rows, or a lower q)")
        sigma, xi = gpd_moments(peaks)
        # P(error > z) = (peaks / n) * P(peak > z - t): solve for the given risk
        ratio = self.risk * len(errors) / len(peaks)
        if ratio >= 1:  # the risk asked for is inside the body: the quantile says it
            return float(np.quantile(errors, 1 - self.risk))
        if abs(xi) < 1e-9:
            return t - sigma * math.log(ratio)
        return t + sigma / xi * (ratio ** -xi - 1)


def gpd_moments(excesses: np.ndarray) -> tuple[float, float]:
    """Scale and shape of a generalised Pareto distribution with these mean and
    variance (method of moments; the shape is held below 0.5, where the variance
    exists)."""
    m, v = float(np.mean(excesses)), float(np.var(excesses))
    if v <= 0:
        return max(m, 1e-12), 0.0
    xi = min(0.5 * (1 - m * m / v), 0.49)
    sigma = m * (1 - xi)
    return max(sigma, 1e-12), xi


ThresholdRule = Annotated[Quantile | QuantileFactor | PeaksOverThreshold, Field(discriminator="rule")]


def parse_rule(text: str) -> Quantile | QuantileFactor | PeaksOverThreshold:
    """``quantile[:Q]``, ``quantile_factor[:Q,FACTOR]`` or ``pot[:Q,RISK]``, as the
    CLI takes them; raises ValueError naming what is wrong."""
    name, _, params = text.partition(":")
    values = [float(p) for p in params.split(",")] if params else []
    fields = {"quantile": ("q",), "quantile_factor": ("q", "factor"), "pot": ("q", "risk")}
    if name not in fields:
        raise ValueError(f"unknown threshold rule {name!r}; expected one of {', '.join(fields)}")
    if len(values) > len(fields[name]):
        raise ValueError(f"{name} takes at most {len(fields[name])} parameters ({', '.join(fields[name])})")
    kwargs = dict(zip(fields[name], values, strict=False))
    cls = {"quantile": Quantile, "quantile_factor": QuantileFactor, "pot": PeaksOverThreshold}[name]
    return cls(**kwargs)
