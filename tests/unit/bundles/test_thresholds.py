"""Gate threshold rules on errors whose true quantiles are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from serve_ml.bundles.thresholds import (
    PeaksOverThreshold,
    Quantile,
    QuantileFactor,
    ThresholdRule,
    gpd_moments,
    parse_rule,
)


def test_quantile_and_quantile_factor() -> None:
    errors = np.arange(1, 1001, dtype=np.float64)
    assert Quantile(q=0.99).threshold(errors) == pytest.approx(np.quantile(errors, 0.99))
    assert QuantileFactor(q=0.99, factor=1.5).threshold(errors) == pytest.approx(1.5 * np.quantile(errors, 0.99))


def test_pot_reaches_a_risk_far_below_one_over_the_rows() -> None:
    # Exponential errors: P(X > z) = exp(-z), so the threshold for risk r is -ln(r).
    # 5,000 rows cannot show a 1e-5 quantile directly; the fitted tail can.
    errors = np.random.default_rng(7).exponential(1.0, 5000)
    z = PeaksOverThreshold(q=0.95, risk=1e-5).threshold(errors)
    assert z == pytest.approx(-math.log(1e-5), rel=0.15)
    assert z > errors.max()  # beyond anything seen: a plain quantile would stop at the maximum


def test_pot_on_a_heavy_tail_is_above_the_exponential_answer() -> None:
    # Pareto tail (shape 1/3): P(X > z) = (1 + z/3)^-3 for the generalised Pareto with xi=1/3, sigma=1
    u = np.random.default_rng(3).random(20_000)
    errors = 3 * (u ** (-1 / 3) - 1)
    z = PeaksOverThreshold(q=0.9, risk=1e-4).threshold(errors)
    truth = 3 * ((1e-4) ** (-1 / 3) - 1)
    assert z == pytest.approx(truth, rel=0.35)
    assert z > -math.log(1e-4) * np.mean(errors)  # heavier than an exponential of the same mean


def test_gpd_moments_recover_the_shape() -> None:
    u = np.random.default_rng(5).random(50_000)
    sigma, xi = gpd_moments(2 * ((u ** -0.2 - 1) / 0.2))  # xi = 0.2, sigma = 2
    assert xi == pytest.approx(0.2, abs=0.05) and sigma == pytest.approx(2, rel=0.1)


def test_pot_needs_peaks() -> None:
    with pytest.raises(ValueError, match="at least 10 errors above"):
        PeaksOverThreshold(q=0.99).threshold(np.arange(100, dtype=np.float64))


def test_rules_parse_from_the_cli_and_round_trip_through_the_manifest_field() -> None:
    assert parse_rule("quantile") == Quantile()
    assert parse_rule("quantile_factor:0.98,2") == QuantileFactor(q=0.98, factor=2)
    assert parse_rule("pot:0.97,1e-6") == PeaksOverThreshold(q=0.97, risk=1e-6)
    adapter: TypeAdapter = TypeAdapter(ThresholdRule)
    for rule in (Quantile(), QuantileFactor(), PeaksOverThreshold()):
        assert adapter.validate_python(rule.model_dump()) == rule
    with pytest.raises(ValueError, match="unknown threshold rule 'median'"):
        parse_rule("median")
    with pytest.raises(ValueError, match="at most 2 parameters"):
        parse_rule("pot:0.9,0.1,3")
    with pytest.raises(ValidationError):
        parse_rule("quantile:1.5")
