"""Evaluate one bundle on labelled rows: what ``serve-ml bundle evaluate`` prints.

Every figure comes from scoring the rows through the same code that serves them
(:func:`serve_ml.bundles.scoring.score_group`), so an evaluation measures what the
server would answer, derived features and decision thresholds included.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serve_ml.bundles.datasets import Ordering
from serve_ml.bundles.loader import Bundle
from serve_ml.bundles.rul_training import RulSpec, rul_figures, rul_labels, rul_target
from serve_ml.bundles.scoring import score_group
from serve_ml.bundles.windows import take, window_index

NORMAL = "none"


def binary_report(truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Precision, recall, F1, false-alarm and missed-alarm rates of a fault/normal call."""
    tp, fp = int(np.sum(pred & truth)), int(np.sum(pred & ~truth))
    fn, tn = int(np.sum(~pred & truth)), int(np.sum(~pred & ~truth))
    return {
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "f1": round(2 * tp / (2 * tp + fp + fn), 4) if tp + fp + fn else None,
        "false_alarm_rate": round(fp / (fp + tn), 4) if fp + tn else None,
        "missed_alarm_rate": round(fn / (tp + fn), 4) if tp + fn else None,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def evaluate(bundle: Bundle, columns: dict[str, np.ndarray], labels: np.ndarray,
             ordering: Ordering | None = None) -> dict[str, Any]:
    """Per modality (the gate), the gate combined, and the classifier, on ``labels``
    (``none`` normal; anything else a fault). A bundle with sequence modalities is
    judged on the rows with a whole window behind them, in ``ordering``'s time order
    per unit (file order without one). With run-to-failure ``ordering`` (unit
    and time) and a bundle with a RUL head: its figures too, and rows on the healthy
    plateau (RUL at or above the cap) count as normal, the others as faults."""
    inputs = {f: np.asarray(c, dtype=np.float64) for f, c in columns.items() if f in bundle.known_features}
    n = len(labels)
    head = bundle.manifest.rul
    target = None
    if head is not None and ordering is not None:
        target = rul_target(ordering)
        labels = rul_labels(labels, target, RulSpec(cap=head.cap), NORMAL)
    windows = [m.window_steps for m in bundle.modalities.values() if m.input == "windows"]
    without_window = 0
    if windows:  # sequence modalities: each row with the window of its unit's readings leading to it
        win = window_index(n, max(windows), ordering)
        keep = np.flatnonzero(win[:, 0] >= 0)
        without_window = n - len(keep)
        inputs, labels, n = take(inputs, keep, win), labels[keep], len(keep)
        target = None if target is None else target[keep]
    g = score_group(bundle, inputs, n, enable_xgb=True, cascade="always")  # the classifier on every row
    ok = np.ones(n, dtype=bool)
    ok[list(g.bad_rows)] = False
    truth = (labels != NORMAL)[ok]
    out: dict[str, Any] = {"rows": int(ok.sum()), "faulty_rows": int(truth.sum()),
                           "rows_not_scored": n - int(ok.sum()) + without_window, "modalities": {}}
    if windows:
        out["rows_without_a_full_window"] = without_window
    for m in g.modalities:
        if m.anomaly is not None:
            out["modalities"][m.name] = binary_report(truth, m.anomaly[ok])
    out["gate"] = binary_report(truth, g.anomaly[ok])
    if g.classifier_ran and bundle.classifier is not None and g.labels is not None:
        classes = bundle.classifier.spec.classes
        pred = np.asarray(classes)[g.labels][ok]
        normal = bundle.classifier.spec.normal_class
        out["classifier"] = binary_report(truth, pred != normal)
        out["classifier"]["by_fault_recall"] = {
            c: {"rows": int(np.sum(labels[ok] == c)), "detected": int(np.sum((labels[ok] == c) & (pred != normal)))}
            for c in sorted(set(labels[ok].tolist()) - {NORMAL})}
        table: dict[str, dict[str, int]] = {}
        for t, p in zip(np.where(labels[ok] == NORMAL, normal, labels[ok]).tolist(), pred.tolist(), strict=True):
            table.setdefault(t, {}).setdefault(p, 0)
            table[t][p] += 1
        out["classifier"]["confusion_by_class"] = table
        # What the server answers: under a cascade, a fault only where the gate flagged the row too.
        cascade = bundle.manifest.cascade
        served = (pred != normal) & g.anomaly[ok] if cascade == "gate_then_classify" else pred != normal
        out["served"] = {"cascade": cascade, **binary_report(truth, served)}
    else:
        out["classifier"] = {"status": "skipped", "reason": g.classifier_reason}
    if target is not None and g.rul is not None and bundle.rul is not None:
        truth = np.minimum(target, head.cap) if head.cap is not None else target  # type: ignore[union-attr]
        lower, upper = bundle.rul.bounds(g.rul)
        out["rul"] = {"unit": head.unit, "cap": head.cap,  # type: ignore[union-attr]
                      **rul_figures(g.rul[ok], truth[ok], lower[ok], upper[ok])}
        near = ok & (truth < (head.cap or np.inf))  # type: ignore[union-attr]
        if near.any():
            out["rul"]["below_cap"] = rul_figures(g.rul[near], truth[near], lower[near], upper[near])
    return out


def format_report(r: dict[str, Any]) -> str:
    lines = [f"rows {r['rows']} (faulty {r['faulty_rows']}, not scored {r['rows_not_scored']})", "",
             f"{'':<22}{'precision':>10}{'recall':>8}{'F1':>8}{'false alarm':>13}{'missed':>8}   tp/fp/fn/tn"]

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    def row(name: str, b: dict[str, Any]) -> str:
        c = b["confusion"]
        return (f"{name:<22}{f(b['precision']):>10}{f(b['recall']):>8}{f(b['f1']):>8}"
                f"{f(b['false_alarm_rate']):>13}{f(b['missed_alarm_rate']):>8}   "
                f"{c['tp']}/{c['fp']}/{c['fn']}/{c['tn']}")

    for name, b in r["modalities"].items():
        lines.append(row(f"gate: {name}", b))
    lines.append(row("gate: combined", r["gate"]))
    clf = r["classifier"]
    if "f1" in clf:
        lines.append(row("classifier", clf))
        lines.append(row(f"served ({r['served']['cascade']})", r["served"]))
        lines += ["", "classifier recall by fault: " + ", ".join(
            f"{c} {v['detected']}/{v['rows']}" for c, v in clf["by_fault_recall"].items())]
        classes = sorted({p for row_ in clf["confusion_by_class"].values() for p in row_})
        lines += ["", "confusion (rows: truth, columns: predicted)", " " * 10 + "".join(f"{c:>9}" for c in classes)]
        for t, preds in sorted(clf["confusion_by_class"].items()):
            lines.append(f"{t:<10}" + "".join(f"{preds.get(c, 0):>9}" for c in classes))
    else:
        lines.append(f"classifier: skipped ({clf['reason']})")
    if "rul" in r:
        u = r["rul"]
        lines += ["", f"RUL ({u['unit']}, cap {u['cap']})   rows  RMSE     MAE   NASA score  interval coverage"]
        for name, f_ in (("all rows", u), ("below the cap", u.get("below_cap"))):
            if f_:
                lines.append(f"  {name:<20}{f_['rows']:>6}{f_['rmse']:>7.2f}{f_['mae']:>8.2f}{f_['nasa_score']:>13.1f}"
                             f"{f_['interval_coverage']:>19.3f}")
    return "\n".join(lines)
