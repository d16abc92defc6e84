"""Columnar bulk scoring: one array per feature in, one array per output out.

The row-oriented bulk path builds a dict per reading on the way in and another on
the way out; at 1,000 rows that, not the model, is most of the cost. Here the rows
of one request share an equipment id (and optionally power and version), so the
whole request is a handful of numpy calls, and the answer is serialised from the
arrays directly (orjson writes numpy arrays natively).

Rows are in input order in every output column. A row that cannot be scored (a
non-finite input) has ``score`` null and ``anomaly`` false and is listed in
``errors`` with the reason; the other rows are unaffected. Where rows fall into
several power classes, ``power`` and ``model_version`` say, per row, which bundle
scored them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.scoring import GroupScore, ModalityScore, score_group
from serve_ml.core.errors import FeatureError, PayloadTooLarge
from serve_ml.core.reading import BAD_FEATURE_NAME, MAX_FEATURES, MAX_NAME_CHARS, NOT_A_NUMBER, TOO_MANY_FEATURES

JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
CLASSIFIER_S = "classifier_s"
"""The key of :func:`score_columns`' result holding the classifier's seconds, for the
caller's metrics; not part of the answer (the caller pops it before sending)."""
BINARY_DTYPES: dict[str, np.dtype] = {"float64": np.dtype("<f8"), "float32": np.dtype("<f4")}


def score_columns(catalog: Catalog, equipment_id: str, power: str | None, version: str | None,
                  columns: Mapping[str, np.ndarray], n: int, *, enable_xgb: bool) -> dict[str, Any]:
    """Score ``n`` rows given as float64 columns; raises ServeMLError for the whole
    request (unknown equipment, power, version or feature names)."""
    parts = [(sub, _masked(score_group(bundle, columns if sub is None else {f: c[sub] for f, c in columns.items()},
                                       n if sub is None else len(sub), enable_xgb=enable_xgb)))
             for bundle, sub in catalog.resolve(equipment_id, power, version, _last_step(columns), n)]
    out = _single(equipment_id, parts[0][1]) if len(parts) == 1 else _merge(equipment_id, parts, n)
    out[CLASSIFIER_S] = sum(g.classifier_s for _, g in parts)
    return out


def _last_step(columns: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """Windows (rows x steps) reduced to each row's own reading, for choosing its power class."""
    if all(c.ndim == 1 for c in columns.values()):
        return columns
    return {f: c[:, -1] if c.ndim == 2 else c for f, c in columns.items()}


def _masked(g: GroupScore) -> GroupScore:
    """Rows with non-finite inputs carry no verdict: null score and errors, no anomaly."""
    if not g.bad_rows:
        return g
    bad = list(g.bad_rows)
    score, anomaly = g.score.copy(), g.anomaly.copy()
    score[bad], anomaly[bad] = np.nan, False
    mods = []
    for m in g.modalities:
        if m.present:
            err, an = m.errors.copy(), m.anomaly.copy()  # type: ignore[union-attr]
            err[bad], an[bad] = np.nan, False
            m = ModalityScore(m.name, True, m.threshold, err, an, faulty=m.faulty)
        mods.append(m)
    probs = None if g.probabilities is None else g.probabilities.copy()
    if probs is not None:
        probs[bad] = np.nan
    return GroupScore(g.bundle, g.n, score, anomaly, mods, g.classifier_ran, g.classifier_reason, probs, g.bad_rows,
                      g.labels, g.classified, g.classifier_s)


def _ident(g: GroupScore) -> tuple[str, str]:
    m = g.bundle.manifest
    return m.power, m.model_version


def _errors(bad: Mapping[int, dict[str, str]], rows: np.ndarray | None) -> dict[str, Any]:
    return {str(i if rows is None else int(rows[i])): {"status": FeatureError.status_code,
                                                        "error": FeatureError(problems).to_dict()}
            for i, problems in bad.items()}


def _classifier(g: GroupScore) -> dict[str, Any]:
    if not g.classifier_ran:
        return {"status": "skipped", "reason": g.classifier_reason}
    classes = g.bundle.classifier.spec.classes  # type: ignore[union-attr]
    probs = g.probabilities
    label = np.asarray(classes, dtype=object)[g.labels]
    if g.bad_rows:
        label[list(g.bad_rows)] = None
    if g.classified is None:
        return {"status": "ran", "classes": classes, "probabilities": probs, "label": label.tolist()}
    # A cascade: rows the gate passed have no label, null probabilities, and say so.
    label[~g.classified] = None
    return {"status": "ran", "cascade": "gate_then_classify", "classes": classes, "probabilities": probs,
            "label": label.tolist(), "classified": g.classified}


def _single(equipment_id: str, g: GroupScore) -> dict[str, Any]:
    power, version = _ident(g)
    return {"equipment_id": equipment_id, "rows": g.n, "power": power, "model_version": version,
            "anomaly": g.anomaly, "score": g.score,
            "modalities": {m.name: ({"threshold": m.threshold, "error": m.errors, "anomaly": m.anomaly}
                                    if m.present else m.absent())
                           for m in g.modalities},
            "classifier": _classifier(g), "errors": _errors(g.bad_rows, None), **_rul(g)}


def _rul(g: GroupScore) -> dict[str, Any]:
    """``{"rul": {unit, value[], lower[], upper[]}}`` (null for rows not scored), or
    ``{"rul": None}`` when the readings lack the head's features; nothing without a head."""
    head = g.bundle.rul
    if head is None:
        return {}
    if g.rul is None:
        return {"rul": None}
    lower, upper = head.bounds(g.rul)
    value = g.rul.copy()
    if g.bad_rows:
        bad = list(g.bad_rows)
        value[bad] = lower[bad] = upper[bad] = np.nan
    return {"rul": {"unit": head.spec.unit, "value": value, "lower": lower, "upper": upper}}


def _merge(equipment_id: str, parts: list[tuple[np.ndarray | None, GroupScore]], n: int) -> dict[str, Any]:
    """Several power classes in one request: scatter each group's arrays back into
    input order (absent values are NaN, serialised as null)."""
    power = np.empty(n, dtype=object)
    version = np.empty(n, dtype=object)
    score = np.full(n, np.nan)
    anomaly = np.zeros(n, dtype=bool)
    mods: dict[str, dict[str, np.ndarray]] = {}
    errors: dict[str, Any] = {}
    classifiers: list[dict[str, Any]] = []
    rul: dict[str, Any] | None = None  # one unit per equipment: its bundles share a training convention
    for rows, g in parts:
        assert rows is not None
        p, v = _ident(g)
        power[rows], version[rows] = p, v
        score[rows] = g.score
        anomaly[rows] = g.anomaly
        for m in g.modalities:
            cols = mods.setdefault(m.name, {"error": np.full(n, np.nan), "anomaly": np.zeros(n, dtype=bool)})
            if m.present:
                cols["error"][rows] = m.errors
                cols["anomaly"][rows] = m.anomaly
        errors.update(_errors(g.bad_rows, rows))
        classifiers.append({"power": p, **_classifier(g), "rows": rows})
        part = _rul(g).get("rul")
        if part is not None:
            if rul is None:
                rul = {"unit": part["unit"], **{k: np.full(n, np.nan) for k in ("value", "lower", "upper")}}
            for k in ("value", "lower", "upper"):
                rul[k][rows] = part[k]
    out = {"equipment_id": equipment_id, "rows": n, "power": power.tolist(), "model_version": version.tolist(),
           "anomaly": anomaly, "score": score, "modalities": mods, "classifier": classifiers, "errors": errors}
    if any(g.bundle.rul is not None for _, g in parts):
        out["rul"] = rul
    return out


def dumps(result: dict[str, Any]) -> bytes:
    return orjson.dumps(result, option=JSON_OPTS)


def to_arrays(columns: Mapping[str, Any], max_rows: int) -> tuple[dict[str, np.ndarray], int]:
    """JSON columns -> float64 arrays of one common length (1..max_rows); raises
    FeatureError naming each bad column, PayloadTooLarge over the row limit."""
    out: dict[str, np.ndarray] = {}
    problems: dict[str, str] = {}
    for name, values in columns.items():
        try:
            arr = np.asarray(values)
        except ValueError:  # ragged windows
            arr = np.asarray([], dtype=object)
        if arr.ndim not in (1, 2) or arr.dtype.kind not in "if":  # bools, strings, nulls, ragged nesting
            problems[name] = (f"{NOT_A_NUMBER} in every row (a flat array of numbers, or one window of numbers "
                              "per row, every window of the same length)")
            continue
        out[name] = arr.astype(np.float64, copy=False)
    shapes = {a.shape for a in out.values()}
    if not problems and len(shapes) > 1:
        problems["columns"] = f"columns differ in shape (rows, or rows x steps): {sorted(shapes)}"
    if problems:
        raise FeatureError(problems)
    shape = shapes.pop() if shapes else (0,)
    n = shape[0]
    if n == 0 or (len(shape) == 2 and shape[1] == 0):
        raise FeatureError({"columns": "expected at least one row"})
    values = n * (shape[1] if len(shape) == 2 else 1)
    if values > max_rows:
        raise PayloadTooLarge(f"columnar request has {n} rows" + (f" of {shape[1]} steps ({values} values per "
                              "feature)" if len(shape) == 2 else "") + f"; the limit is {max_rows}")
    return out, n


def from_binary(body: bytes, features: str, dtype: str, max_rows: int,
                steps: int = 1) -> tuple[dict[str, np.ndarray], int]:
    """A raw binary columnar body -> float64 arrays, without touching a value in Python.

    ``features`` is the comma-separated column order; ``body`` holds each column's
    values back to back (all of the first feature's rows, then the second's...) as
    little-endian ``dtype``. Raises FeatureError naming what does not add up,
    PayloadTooLarge over the row limit."""
    names = features.split(",")
    problems: dict[str, str] = {}
    if dtype not in BINARY_DTYPES:
        problems["dtype"] = f"expected one of {', '.join(BINARY_DTYPES)}, got {dtype[:40]!r}"
    if len(names) > MAX_FEATURES:
        problems["features"] = TOO_MANY_FEATURES
    elif any(not n or len(n) > MAX_NAME_CHARS for n in names):
        problems["features"] = f"comma-separated; {BAD_FEATURE_NAME}"
    elif len(set(names)) != len(names):
        problems["features"] = "a feature name appears twice"
    if problems:
        raise FeatureError(problems)
    item = BINARY_DTYPES[dtype]
    row_bytes = item.itemsize * len(names) * steps
    if not body or len(body) % row_bytes:
        shape = f"{len(names)}" if steps == 1 else f"{len(names)} x {steps}"
        raise FeatureError({"body": f"{len(body)} bytes is not a whole number of rows of {shape} {dtype} values "
                                    f"({row_bytes} bytes per row)"})
    n = len(body) // row_bytes
    if n * steps > max_rows:
        raise PayloadTooLarge(f"columnar request has {n} rows" + (f" of {steps} steps" if steps > 1 else "")
                              + f"; the limit is {max_rows} values per feature")
    matrix = np.frombuffer(body, dtype=item).reshape((len(names), n) if steps == 1 else (len(names), n, steps))
    if item != np.float64:
        matrix = matrix.astype(np.float64)
    return {name: matrix[j] for j, name in enumerate(names)}, n
