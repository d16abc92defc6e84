"""The builder's classifier phase, and its choice of cascade: the XGBoost fault
classifier learnt on the split's labelled rows with thresholds calibrated out of fold,
its figures, and whether the gate should stand in front of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serve_ml.bundles.build_spec import CASCADE_F1_TOLERANCE, BuildSpec, Inputs, Progress
from serve_ml.bundles.fault_classifier import binary_f1, decide, fit_classifier
from serve_ml.bundles.loader import Bundle
from serve_ml.bundles.scoring import score_group
from serve_ml.bundles.splits import Rows


def _f1(y_true: np.ndarray, y_pred: np.ndarray, positive: str) -> float:
    tp = np.sum((y_pred == positive) & (y_true == positive))
    fp = np.sum((y_pred == positive) & (y_true != positive))
    fn = np.sum((y_pred != positive) & (y_true == positive))
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 1.0


@dataclass(frozen=True)
class OutOfFold:
    """The classifier's out-of-fold call on each labelled row: fault or not."""

    rows: np.ndarray
    fault: np.ndarray


def train_classifier(spec: BuildSpec, columns: dict[str, np.ndarray], labels: np.ndarray, rows: Rows,
                      bdir: Path, progress: Progress) -> tuple[dict[str, Any] | None, dict[str, Any], OutOfFold | None]:
    if not spec.classifier or not len(rows.faulty):
        return None, {}, None
    feats = spec.classifier_features or list(dict.fromkeys(f for fs in spec.modalities.values() for f in fs))
    labelled = rows.clf_train
    classes = [spec.normal_label, *sorted(set(labels[labelled].tolist()) - {spec.normal_label})]
    if len(classes) < 2:
        progress("  [classifier] none: no fault rows before the evaluation block")
        return None, {}, None
    cidx = {c: i for i, c in enumerate(classes)}
    y = np.array([cidx[c] for c in labels[labelled]])
    x = np.column_stack([columns[f] for f in feats])
    folds = "folds of consecutive time" if spec.split == "time" else "folds of whole units" if spec.split == "unit" \
        else "stratified folds"
    progress(f"  [classifier] XGBoost on {len(labelled)} labelled rows, thresholds calibrated on {folds}")
    fit = fit_classifier(x[labelled], y, classes, 0, seed=spec.seed, max_depth=spec.classifier_depth,
                         rounds=spec.classifier_rounds, random_forest=spec.classifier_mode == "random_forest",
                         groups=rows.groups)
    fit.booster.save_model(str(bdir / "xgb.json"))
    pred, truth = np.asarray(classes)[fit.oof_labels], labels[labelled]
    metrics = {"classifier_eval": f"{fit.folds} {folds}, out of fold, over the {len(labelled)} labelled rows it "
                                  "learnt", **_classifier_figures("classifier", truth, pred, spec.normal_label)}
    calls = OutOfFold(labelled, pred != spec.normal_label)
    if len(rows.clf_test):  # a time or unit split: the classifier never saw the evaluation block
        import xgboost as xgb

        probs = np.asarray(fit.booster.predict(xgb.DMatrix(x[rows.clf_test]))).reshape(len(rows.clf_test), -1)
        t = np.array([np.inf if i == 0 else fit.thresholds[c] for i, c in enumerate(classes)])
        held = np.asarray(classes)[decide(probs, t, 0)]
        known = np.isin(labels[rows.clf_test], classes)  # a fault first seen in the evaluation block is still a fault
        metrics.update(_classifier_figures("classifier_test", labels[rows.clf_test], held, spec.normal_label,
                                           modes=classes[1:]))
        metrics["classifier_test_rows"] = f"{len(rows.clf_test)} ({int((~known).sum())} of unseen fault modes)"
        calls = OutOfFold(np.concatenate([labelled, rows.clf_test]),
                           np.concatenate([calls.fault, held != spec.normal_label]))
    return ({"kind": "xgboost", "file": "xgb.json", "features": feats, "classes": classes,
             "normal_class": spec.normal_label, "fault_thresholds": fit.thresholds, "mode": spec.classifier_mode},
            metrics, calls)


def _classifier_figures(prefix: str, truth: np.ndarray, pred: np.ndarray, normal: str,
                        modes: list[str] | None = None) -> dict[str, Any]:
    faults = modes if modes is not None else sorted(set(truth.tolist()) - {normal})
    return {
        f"{prefix}_f1_failure_vs_none": round(binary_f1(truth != normal, pred != normal), 4),
        f"{prefix}_f1_macro_faults": round(float(np.mean([_f1(truth, pred, c) for c in faults])), 4) if faults else 0.0,
        f"{prefix}_f1_by_fault": {c: round(_f1(truth, pred, c), 4) for c in faults},
    }


def choose_cascade(spec: BuildSpec, bundle: Bundle, inputs: Inputs, labels: np.ndarray,
                    rows: Rows, oof: OutOfFold | None) -> tuple[str, dict[str, Any]]:
    """The manifest's cascade, and the figures behind the choice.

    Judged on held-out normal rows and every fault row (the gates never trained on
    a fault), with the classifier's out-of-fold calls: what 'always' would answer
    against what the cascade would (a fault only where the gate flagged the row too)."""
    if not bundle.modalities or bundle.classifier is None or oof is None:
        return "always", {}
    judged = np.concatenate([rows.test, rows.faulty])
    where = {int(r): i for i, r in enumerate(oof.rows.tolist())}
    clf_fault = oof.fault[[where[int(r)] for r in judged]]
    gate = score_group(bundle, inputs(judged), len(judged), enable_xgb=False).anomaly
    truth = labels[judged] != spec.normal_label
    f1_always, f1_cascade = binary_f1(truth, clf_fault), binary_f1(truth, clf_fault & gate)
    if spec.cascade == "auto":
        chosen = "gate_then_classify" if f1_cascade >= f1_always - CASCADE_F1_TOLERANCE else "always"
        reason = (f"auto: binary F1 {f1_cascade:.3f} with the gate in front, {f1_always:.3f} without; "
                  f"tolerance {CASCADE_F1_TOLERANCE}")
    else:
        chosen, reason = spec.cascade, "chosen by the builder's caller"
    return chosen, {"cascade": chosen, "cascade_reason": reason, "cascade_f1_always": round(f1_always, 4),
                    "cascade_f1_gate_then_classify": round(f1_cascade, 4),
                    "cascade_gated_fraction": round(float(gate.mean()), 4)}
