"""The classifier's decision rule and its out-of-fold calibration."""

from __future__ import annotations

import numpy as np

from serve_ml.bundles.fault_classifier import binary_f1, calibrate, decide, fit_classifier, stratified_folds


def test_folds_cover_every_row_once_and_spread_each_class() -> None:
    y = np.array([0] * 50 + [1] * 10 + [2] * 5)
    folds = stratified_folds(y, 5, seed=1)
    joined = np.sort(np.concatenate(folds))
    assert joined.tolist() == list(range(len(y)))
    assert all(int(np.sum(y[f] == 1)) == 2 and int(np.sum(y[f] == 2)) == 1 for f in folds)


def test_decide_takes_the_likeliest_fault_over_its_threshold_else_normal() -> None:
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.45, 0.45], [0.2, 0.3, 0.5], [0.9, 0.05, 0.05]])
    t = np.array([np.inf, 0.4, 0.6])
    assert decide(probs, t, 0).tolist() == [0, 1, 0, 0]
    t_never = np.array([np.inf, 1.01, 1.01])
    assert decide(probs, t_never, 0).tolist() == [0, 0, 0, 0]


def test_calibration_silences_a_class_that_only_costs_precision() -> None:
    """Class 2 is noise (its probability says nothing); class 1 is informative."""
    rng = np.random.default_rng(0)
    y = np.array([0] * 400 + [1] * 40 + [2] * 40)
    p1 = np.where(y == 1, 0.8, 0.02)
    p2 = rng.uniform(0.0, 0.7, len(y)) * (1 - p1)
    probs = np.column_stack([1 - p1 - p2, p1, p2])
    t = calibrate(probs, y, 0)
    truth = y != 0
    assert binary_f1(truth, decide(probs, t, 0) != 0) > binary_f1(truth, probs.argmax(axis=1) != 0)
    assert t[2] > probs[:, 2].max()  # never declared


def test_fit_learns_a_rule_and_reports_held_out_labels() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 3))
    y = np.where(x[:, 0] > 1.2, 1, np.where(x[:, 1] < -1.3, 2, 0))
    fit = fit_classifier(x, y, ["none", "a", "b"], 0, seed=0, rounds=30)
    assert set(fit.thresholds) == {"a", "b"} and fit.folds == 5
    assert binary_f1(y != 0, fit.oof_labels != 0) > 0.9
