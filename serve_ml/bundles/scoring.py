"""Vectorised scoring of one homogeneous group of rows against one bundle.

"Homogeneous" means every row carries the same feature names, so modality presence
is decided once per group and the maths is a handful of numpy calls whatever the
row count. A single reading is a group of one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from serve_ml.bundles.classifier import FaultClassifier
from serve_ml.bundles.derived import derive
from serve_ml.bundles.loader import Bundle
from serve_ml.bundles.manifest import Cascade
from serve_ml.core.errors import FeatureError, ServeMLError
from serve_ml.core.reading import NOT_FINITE

Result = dict[str, Any] | ServeMLError

XGB_DISABLED = "disabled: SERVE_ML_ENABLE_XGB is not true"
XGB_ABSENT = "bundle has no classifier (gate-only)"
GATE_PASSED = "gate_then_classify: the gate passed this row"
# Sensor faults, per feature and row (int8 codes): what the stream's data-quality
# gate found, and what the scorer did not feed to a modality as if it were real.
FAULT_MISSING, FAULT_FLATLINE, FAULT_OUT_OF_RANGE = 1, 2, 3
FAULT_NAMES = {FAULT_MISSING: "missing", FAULT_FLATLINE: "flatline", FAULT_OUT_OF_RANGE: "out_of_range"}


@dataclass(slots=True)
class ModalityScore:
    name: str
    present: bool
    threshold: float
    errors: np.ndarray | None = None  # (rows,)
    anomaly: np.ndarray | None = None  # (rows,) bool
    missing: tuple[str, ...] = ()  # not scored because these sensors were not sent
    faulty: np.ndarray | None = None  # (rows,) bool: not scored there, a sensor of it faulted

    def absent(self) -> dict[str, Any]:
        """How a modality that was not scored is reported."""
        out: dict[str, Any] = {"status": "absent", "threshold": self.threshold}
        if self.missing:
            out["missing"] = list(self.missing)
        return out


@dataclass(slots=True)
class GroupScore:
    """Column-oriented result for the rows of one group (rows with non-finite
    inputs are flagged in ``bad_rows`` and carry no verdict)."""

    bundle: Bundle
    n: int
    score: np.ndarray
    anomaly: np.ndarray
    modalities: list[ModalityScore]
    classifier_ran: bool
    classifier_reason: str | None
    probabilities: np.ndarray | None
    bad_rows: dict[int, dict[str, str]]
    labels: np.ndarray | None = None  # class index per row, by the classifier's decision rule
    # Rows the classifier ran on (cascade ``gate_then_classify``); None: every row, when
    # it ran. The other rows' probabilities are NaN and their labels mean nothing.
    classified: np.ndarray | None = None
    classifier_s: float = 0.0  # time spent in the classifier
    rul: np.ndarray | None = None  # remaining useful life per row, when the bundle has a head and its features
    # The raw values scored, one column per feature sent (set by ``batch.score_groups``):
    # what raw thresholds and rollups read, without going back to the readings.
    inputs: dict[str, np.ndarray] | None = None
    # Sensor fault codes per feature (FAULT_*), rows with none at 0; only features with a fault.
    faults: dict[str, np.ndarray] | None = None

    def classified_rows(self) -> int:
        """How many rows the classifier ran on."""
        if not self.classifier_ran:
            return 0
        return self.n if self.classified is None else int(np.count_nonzero(self.classified))


def check_feature_names(bundle: Bundle, names: frozenset[str]) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """Validate which features a group carries; return the names of the complete
    modalities, and for each incomplete one (some of its sensors sent, not all) the
    sensors it misses. A reading is scored on its complete modalities; a dead
    sensor must not silence the others.

    Raises FeatureError naming every unknown feature, and every missing one when no
    modality is complete.
    """
    problems: dict[str, str] = {}
    derived = {d.name: d for d in bundle.manifest.derived}
    for name in names - bundle.known_features - derived.keys():
        problems[name] = "unknown feature for this bundle"
    if not bundle.modalities:  # classifier-only: the classifier is the verdict, so it needs every input
        needs = bundle.classifier.spec.features  # type: ignore[union-attr]
        for f in needs:
            if f not in names and f not in derived:
                problems[f] = f"missing (the classifier needs {', '.join(needs)})"
        if problems:
            raise FeatureError(problems)
        return [], {}
    present: list[str] = []
    incomplete: dict[str, tuple[str, ...]] = {}
    for mod in bundle.modalities.values():
        have = names.intersection(mod.features)
        if have and len(have) < len(mod.features):
            incomplete[mod.name] = tuple(f for f in mod.features if f not in names)
        elif have:
            present.append(mod.name)
    if not present:
        for name, missing in incomplete.items():
            mod = bundle.modalities[name]
            for f in missing:
                problems[f] = f"missing (modality {mod.name!r} needs {', '.join(mod.features)})"
        if not incomplete:
            wanted = "; ".join(f"{m.name}: {', '.join(m.features)}" for m in bundle.modalities.values())
            problems["features"] = f"no modality is complete; expected one of [{wanted}]"
    if problems:
        raise FeatureError(problems)
    return present, incomplete


def score_group(
    bundle: Bundle,
    columns: Mapping[str, np.ndarray],
    n: int,
    *,
    enable_xgb: bool,
    cascade: Cascade | None = None,
    short_windows: Literal["refuse", "absent"] = "refuse",
    invalid: Mapping[str, np.ndarray] | None = None,
) -> GroupScore:
    """Score ``n`` rows given as float64 ``columns`` (all the same feature names).

    ``invalid``: per feature, the rows where its value is not a measurement (a
    faulted sensor); a modality is not scored on those rows (``sensor_fault``).

    ``short_windows="absent"``: a sequence modality without a whole window is left
    out (``absent``) instead of refusing the rows (the stream, while a window fills).

    A column of shape ``(n, steps)`` carries a window per row, oldest step first:
    sequence modalities read the last ``window_steps`` of it, everything else (dense
    modalities, the classifier, the RUL head) the last step, and the verdict is the
    last step's. ``cascade`` overrides the bundle's own (an evaluation measures the
    classifier on every row as well as what the server answers)."""
    derived = bundle.manifest.derived
    if derived:
        sent = [d for d in derived if d.name in columns]
        if sent:
            raise FeatureError({d.name: f"derived by the bundle ({d.op} of {', '.join(d.inputs)}); "
                                        "send its inputs instead" for d in sent})
        columns = derive(columns, derived)
    windows = None
    if any(c.ndim == 2 for c in columns.values()):
        steps = {c.shape[1] if c.ndim == 2 else 1 for c in columns.values()}
        if len(steps) > 1:
            raise FeatureError({"features": f"every feature needs the same number of steps; got {sorted(steps)}"})
        windows, columns = columns, {f: c[:, -1] for f, c in columns.items()}
    g = _gate_and_classify(bundle, columns, n, enable_xgb=enable_xgb, cascade=cascade or bundle.manifest.cascade,
                           invalid=invalid,
                           windows=windows, short_windows=short_windows)
    if bundle.rul is not None and all(f in columns for f in bundle.rul.spec.features):
        x = np.column_stack([columns[f] for f in bundle.rul.spec.features])
        if g.bad_rows:
            x[list(g.bad_rows)] = 0.0  # keep the maths finite; these rows get an error, not a verdict
        g.rul = bundle.rul.predict(x)
    return g


def _gate_and_classify(
    bundle: Bundle,
    columns: Mapping[str, np.ndarray],
    n: int,
    *,
    enable_xgb: bool,
    cascade: Cascade,
    windows: Mapping[str, np.ndarray] | None,
    short_windows: Literal["refuse", "absent"],
    invalid: Mapping[str, np.ndarray] | None = None,
) -> GroupScore:
    present, incomplete = check_feature_names(bundle, frozenset(columns))
    bad = _non_finite_rows(windows if windows is not None else columns, n)
    short = {m.name: m for m in bundle.modalities.values() if m.name in present and m.input == "windows"
             and (windows is None or next(iter(windows.values())).shape[1] < m.window_steps)}
    if short and short_windows == "absent":
        present = [m for m in present if m not in short]
    elif short:
        got = 1 if windows is None else next(iter(windows.values())).shape[1]
        raise FeatureError({name: f"needs a window of {m.window_steps} consecutive readings (each of "
                                  f"{', '.join(m.features)} an array of {m.window_steps} values, oldest first); "
                                  f"got {got}" for name, m in short.items()})

    score = np.zeros(n)
    anomaly = np.zeros(n, dtype=bool)
    mods: list[ModalityScore] = []
    for mod in bundle.modalities.values():
        if mod.name not in present:
            mods.append(ModalityScore(mod.name, False, mod.threshold, missing=incomplete.get(mod.name, ())))
            continue
        if mod.input == "windows":
            x = np.stack([windows[f][:, -mod.window_steps:] for f in mod.features], axis=-1)  # type: ignore[index]
        else:
            x = np.column_stack([columns[f] for f in mod.features])
        x -= mod.mean
        x /= mod.scale
        if bad:
            x[list(bad)] = 0.0  # keep the maths finite; these rows get an error, not a verdict
        err = mod.model.errors(x)
        faulty = None
        if invalid:
            masks = [invalid[f] for f in mod.features if f in invalid]
            faulty = np.logical_or.reduce(masks) if masks else None
        if faulty is not None and faulty.any():
            err = err.copy()
            err[faulty] = np.nan
            ratio = err / mod.threshold
            ratio[faulty] = 0.0
            over = (ratio > 1.0) & ~faulty
            np.maximum(score, ratio, out=score)
        else:
            faulty = None
            over = err > mod.threshold
            np.maximum(score, err / mod.threshold, out=score)
        anomaly |= over
        mods.append(ModalityScore(mod.name, True, mod.threshold, err, over, faulty=faulty))

    ran, reason, probs, labels = False, None, None, None
    clf = bundle.classifier
    if not bundle.modalities:
        # A classifier-only bundle has no other verdict, so its classifier always runs:
        # anomaly is a fault label, score the probability of any fault.
        t0 = time.perf_counter()
        probs, labels = _classify(clf, columns, bad)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - t0
        normal = clf.spec.classes.index(clf.spec.normal_class)  # type: ignore[union-attr]
        anomaly = labels != normal
        score = 1.0 - probs[:, normal]
        if bad:
            score[list(bad)] = 0.0
            anomaly[list(bad)] = False
        return GroupScore(bundle, n, score, anomaly, mods, True, None, probs, bad, labels, None, elapsed)
    if not enable_xgb:
        reason = XGB_DISABLED if clf is not None else XGB_ABSENT
    elif clf is None:
        reason = XGB_ABSENT
    else:
        missing = [f for f in clf.spec.features if f not in columns]
        if missing:
            reason = f"classifier features missing: {', '.join(missing)}"
        else:
            t0 = time.perf_counter()
            if cascade == "gate_then_classify":
                gated = anomaly.copy()
                if bad:
                    gated[list(bad)] = False
                probs, labels = _classify_gated(clf, columns, gated)
            else:
                probs, labels = _classify(clf, columns, bad)
                gated = None
            return GroupScore(bundle, n, score, anomaly, mods, True, None, probs, bad, labels, gated,
                              time.perf_counter() - t0)
    return GroupScore(bundle, n, score, anomaly, mods, ran, reason, probs, bad, labels)


def _classify(clf: FaultClassifier, columns: Mapping[str, np.ndarray],
              bad: Mapping[int, object]) -> tuple[np.ndarray, np.ndarray]:
    x = np.column_stack([columns[f] for f in clf.spec.features])
    if bad:
        x[list(bad)] = 0.0  # keep the maths finite; these rows get an error, not a verdict
    probs = clf.predict_proba(x)
    return probs, clf.labels(probs)


def _classify_gated(clf: FaultClassifier, columns: Mapping[str, np.ndarray],
                    gated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The classifier on the ``gated`` rows only; the others get NaN probabilities."""
    n, k = len(gated), len(clf.spec.classes)
    probs = np.full((n, k), np.nan)
    labels = np.zeros(n, dtype=np.intp)
    rows = np.flatnonzero(gated)
    if len(rows):
        sub = clf.predict_proba(np.column_stack([columns[f][rows] for f in clf.spec.features]))
        probs[rows] = sub
        labels[rows] = clf.labels(sub)
    return probs, labels


def _non_finite_rows(columns: Mapping[str, np.ndarray], n: int) -> dict[int, dict[str, str]]:
    bad: dict[int, dict[str, str]] = {}
    for name, col in columns.items():
        ok = np.isfinite(col) if col.ndim == 1 else np.isfinite(col).all(axis=1)
        if not ok.all():
            for i in np.flatnonzero(~ok).tolist():
                bad.setdefault(i, {})[name] = NOT_FINITE
    return bad


def materialise(g: GroupScore) -> list[Result]:
    """Turn a column-oriented group score into one JSON-ready dict per row."""
    m = g.bundle.manifest
    ident = {"equipment_id": m.equipment_id, "power": m.power, "model_version": m.model_version}
    score = g.score.tolist()
    anomaly = g.anomaly.tolist()
    mods = [(s.name, s.threshold, s.errors.tolist(), s.anomaly.tolist())
            if s.errors is not None and s.anomaly is not None
            else (s.name, s.threshold, None, None) for s in g.modalities]
    faulty = {s.name: s.faulty.tolist() for s in g.modalities if s.faulty is not None}
    absent = {s.name: s.absent() for s in g.modalities if s.errors is None}
    if g.classifier_ran:
        classes = g.bundle.classifier.spec.classes  # type: ignore[union-attr]
        probs = g.probabilities.tolist()  # type: ignore[union-attr]
        best = g.labels.tolist()  # type: ignore[union-attr]
        ran = [True] * g.n if g.classified is None else g.classified.tolist()
    skipped = {"status": "skipped", "reason": g.classifier_reason}
    passed = {"status": "skipped", "reason": GATE_PASSED}
    rul = rul_items(g)
    rows: list[Result] = []
    for i in range(g.n):
        if i in g.bad_rows:
            rows.append(FeatureError(g.bad_rows[i]))
            continue
        detail = {
            name: ({"status": "scored", "error": err[i], "threshold": thr, "anomaly": an[i]}  # type: ignore[index]
                   if err is not None else absent[name])
            for name, thr, err, an in mods
        }
        for name, rows_ in faulty.items():
            if rows_[i]:
                detail[name] = {"status": "sensor_fault", "threshold": detail[name]["threshold"]}
        if not g.classifier_ran:
            clf: dict[str, Any] = skipped
        elif ran[i]:
            clf = {"status": "ran", "label": classes[best[i]], "probabilities": dict(zip(classes, probs[i], strict=True))}
        else:
            clf = passed
        row = {**ident, "anomaly": anomaly[i], "score": score[i], "modalities": detail, "classifier": clf}
        if rul is not None:
            row["rul"] = rul[i]
        rows.append(row)
    return rows


def rul_items(g: GroupScore) -> list[dict[str, Any] | None] | None:
    """Each row's ``rul`` item, or None for a bundle without a head (no ``rul`` key);
    an item is None (JSON null) when the reading lacks the head's features."""
    head = g.bundle.rul
    if head is None:
        return None
    if g.rul is None:
        return [None] * g.n
    lower, upper = head.bounds(g.rul)
    unit = head.spec.unit
    return [{"value": v, "unit": unit, "lower": lo, "upper": hi}
            for v, lo, hi in zip(g.rul.tolist(), lower.tolist(), upper.tolist(), strict=True)]
