"""Live pushes from the stream writer: per equipment and batch, one message with
its verdicts (sampled when many, see :func:`chart_points`), the per-modality errors
and raw values at the same instants, the newest verdict in full (class
probabilities, RUL band), the newest one the classifier ran on, and its status;
sent with ``pg_notify`` in the batch's transaction, so a message goes out on commit
and never for a batch rolled back. The live application's replicas LISTEN and fan
them out to WebSocket clients (``deployments.live``, ``deployments.live_gateway``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from serve_ml.operations.alarm_store import LIVE_CHANNEL
from serve_ml.pipelines.pgcopy import PG_EPOCH
from serve_ml.pipelines.verdicts import Judged

CHANNEL = LIVE_CHANNEL
MAX_POINTS = 60
# The portal's live chart keeps at most 3,000 points over its 2-minute window, one per
# 40 ms: points sent closer than that only push older ones out of the window.
POINT_MS = 50
MAX_PAYLOAD_BYTES = 7900  # PostgreSQL refuses a notification payload of 8000 bytes or more
_EPOCH_MS = int(PG_EPOCH.timestamp() * 1000)


def verdict_message(groups: Sequence[Judged], status: str, reasons: list[dict[str, Any]]) -> str:
    """One equipment's batch as one message: the verdicts :func:`chart_points` picks,
    then, while the message is too long for a notification, half as many of those."""
    t_us = np.concatenate([g.time_us for g in groups])
    order = np.argsort(t_us, kind="stable")
    n = len(order)
    score = np.concatenate([g.score for g in groups])[order]
    anomaly = np.concatenate([g.anomaly for g in groups])[order]
    mods: dict[str, np.ndarray] = {}
    thresholds: dict[str, float] = {}
    for name in dict.fromkeys(m for g in groups for m, _, _ in (g.errors or [])):
        col = np.concatenate([_errors_of(g, name) for g in groups])[order]
        mods[name] = col
        thresholds[name] = next(t for g in groups for m, t, _ in (g.errors or []) if m == name)
    sensors = {f: np.concatenate([_inputs_of(g, f) for g in groups])[order]
               for f in dict.fromkeys(f for g in groups for f, c in (g.inputs or {}).items() if np.ndim(c) == 1)}
    last_g, last_i = _locate(groups, int(order[-1]))
    classified = _classified(groups, order, t_us)
    peaks = chart_points(t_us[order], score)
    points = MAX_POINTS
    while True:
        pick = peaks[np.unique(np.linspace(0, len(peaks) - 1, min(len(peaks), points)).round().astype(np.intp))]
        doc = {"type": "verdicts", "equipment_id": groups[0].equipment_id, "power": last_g.power,
               "model_version": last_g.model_version, "n": n, "anomalies": int(np.count_nonzero(anomaly)),
               "status": status, "reasons": reasons,
               "points": {"t_ms": ((t_us[order][pick] // 1000) + _EPOCH_MS).tolist(),
                          "score": _rounded(score[pick]), "anomaly": anomaly[pick].tolist(),
                          "modalities": {m: _rounded(c[pick]) for m, c in mods.items()},
                          "sensors": {f: _rounded(c[pick]) for f, c in sensors.items()}},
               "thresholds": thresholds,
               "last": _last(last_g, last_i), "classified": classified}
        text = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        if len(text.encode()) <= MAX_PAYLOAD_BYTES or points <= 2:
            return text
        points //= 2


def chart_points(t_us: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the rows to chart from a time-ordered batch: per
    ``POINT_MS`` of event time the row with the highest score, so sampling never
    hides a spike, and the newest row."""
    bucket = t_us // (POINT_MS * 1000)
    by_peak = np.lexsort((-np.nan_to_num(score, nan=-np.inf), bucket))  # per bucket, the highest score first
    first = np.ones(len(bucket), dtype=bool)
    first[1:] = bucket[by_peak[1:]] != bucket[by_peak[:-1]]
    return np.union1d(by_peak[first], [len(bucket) - 1])


def _last(g: Judged, i: int) -> dict[str, Any]:
    """The newest row: its raw values, fault label and class probabilities, whether the
    classifier ran on it (``ran``, ``gate_passed``; None: the group has no classifier
    running), and its RUL with the head's band and unit (None where the bundle has
    no such part)."""
    probs = None if g.probabilities is None else g.probabilities[i]
    band = None if g.rul_band is None or g.rul is None else {
        "lower": float(g.rul_band[0, i]), "upper": float(g.rul_band[1, i]), "unit": g.rul_unit}
    status = None if g.probabilities is None else "ran" if g.labels[i] is not None else "gate_passed"
    return {"sensors": {} if g.inputs is None else {f: float(c[i]) for f, c in g.inputs.items() if np.ndim(c) == 1},
            "fault_label": g.labels[i], "fault_probabilities": None if probs is None else orjson.Fragment(probs),
            "classifier": status, "rul": None if g.rul is None else float(g.rul[i]), "rul_band": band}


def _classified(groups: Sequence[Judged], order: np.ndarray, t_us: np.ndarray) -> dict[str, Any] | None:
    """The newest row the classifier ran on: its time, fault label and class
    probabilities; None when it ran on none. Behind a gate
    (``cascade: gate_then_classify``) that is rarely the newest row, so the newest
    row alone would almost never show an operator what the classifier said."""
    if all(g.probabilities is None for g in groups):
        return None
    labels = np.concatenate([np.asarray(g.labels, dtype=object) for g in groups])[order]
    ran = np.flatnonzero(labels != None)  # noqa: E711 - elementwise over an object array
    if not ran.size:
        return None
    g, i = _locate(groups, int(order[ran[-1]]))
    probs = None if g.probabilities is None else g.probabilities[i]
    return {"t_ms": int(t_us[order[ran[-1]]] // 1000) + _EPOCH_MS, "fault_label": g.labels[i],
            "fault_probabilities": None if probs is None else orjson.Fragment(probs)}


def _inputs_of(g: Judged, feature: str) -> np.ndarray:
    c = None if g.inputs is None else g.inputs.get(feature)
    return np.full(len(g), np.nan) if c is None or np.ndim(c) != 1 else np.asarray(c, dtype=np.float64)


def _errors_of(g: Judged, name: str) -> np.ndarray:
    for m, _, e in g.errors or []:
        if m == name:
            return np.asarray(e, dtype=np.float64)
    return np.full(len(g), np.nan)


def _locate(groups: Sequence[Judged], flat: int) -> tuple[Judged, int]:
    for g in groups:
        if flat < len(g):
            return g, flat
        flat -= len(g)
    raise IndexError(flat)


def _rounded(a: np.ndarray) -> np.ndarray:
    """float32: orjson writes the shortest form that round-trips it (~8 digits,
    enough for a chart), in C; NaN (a modality not scored on that row) as null."""
    return a.astype(np.float32)
