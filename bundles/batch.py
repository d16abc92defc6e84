"""Score many readings in one call: the single entry point for HTTP and the stream.

Readings are grouped by (identity, feature names) so that each group is scored with
a few vectorised calls; results come back in input order, one per reading, each
either a verdict dict or the ServeMLError that explains why that reading failed.
One bad reading never fails the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bundles.catalog import Catalog
from bundles.scoring import GroupScore, score_group
from serve_ml.errors import FeatureError, ServeMLError

Result = dict[str, Any] | ServeMLError


@dataclass(frozen=True, slots=True)
class Reading:
    equipment_id: str
    features: Mapping[str, float]
    power: str | None = None
    model_version: str | None = None


def score_readings(catalog: Catalog, readings: Sequence[Reading], *, enable_xgb: bool) -> list[Result]:
    out: list[Result | None] = [None] * len(readings)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, r in enumerate(readings):
        key = (r.equipment_id, r.power, r.model_version, tuple(sorted(r.features)))
        groups.setdefault(key, []).append(i)
    for (eq, power, version, names), idx in groups.items():
        try:
            matrix = np.array([[readings[i].features[f] for f in names] for i in idx], dtype=np.float64)
            columns = {f: np.ascontiguousarray(matrix[:, j]) for j, f in enumerate(names)}
            for bundle, sub in catalog.resolve(eq, power, version, columns, len(idx)):
                rows = idx if sub is None else [idx[k] for k in sub.tolist()]
                cols = columns if sub is None else {f: c[sub] for f, c in columns.items()}
                scored = score_group(bundle, cols, len(rows), enable_xgb=enable_xgb)
                for pos, res in zip(rows, materialise(scored), strict=True):
                    out[pos] = res
        except ServeMLError as exc:
            for i in idx:
                out[i] = exc
    return out  # type: ignore[return-value]


def materialise(g: GroupScore) -> list[Result]:
    """Turn a column-oriented group score into one JSON-ready dict per row."""
    m = g.bundle.manifest
    ident = {"equipment_id": m.equipment_id, "power": m.power, "model_version": m.model_version}
    score = g.score.tolist()
    anomaly = g.anomaly.tolist()
    mods = [(s.name, s.threshold, s.errors.tolist(), s.anomaly.tolist()) if s.present
            else (s.name, s.threshold, None, None) for s in g.modalities]
    if g.classifier_ran:
        classes = g.bundle.classifier.spec.classes  # type: ignore[union-attr]
        probs = g.probabilities.tolist()  # type: ignore[union-attr]
        best = g.probabilities.argmax(axis=1).tolist()  # type: ignore[union-attr]
    skipped = {"status": "skipped", "reason": g.classifier_reason}
    rows: list[Result] = []
    for i in range(g.n):
        if i in g.bad_rows:
            rows.append(FeatureError(g.bad_rows[i]))
            continue
        detail = {
            name: ({"status": "scored", "error": err[i], "threshold": thr, "anomaly": an[i]}
                   if err is not None else {"status": "absent", "threshold": thr})
            for name, thr, err, an in mods
        }
        if g.classifier_ran:
            clf: dict[str, Any] = {"status": "ran", "label": classes[best[i]],
                                   "probabilities": dict(zip(classes, probs[i], strict=True))}
        else:
            clf = skipped
        rows.append({**ident, "anomaly": anomaly[i], "score": score[i], "modalities": detail,
                     "classifier": clf})
    return rows
