"""Readers for training data: the AI4I 2020 CSV (UCI, CC BY 4.0) and plain CSVs."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

# AI4I column -> serve-ml feature name (units in the name, as everywhere here).
AI4I_COLUMNS = {
    "Air temperature [K]": "air_temp_k",
    "Process temperature [K]": "process_temp_k",
    "Rotational speed [rpm]": "speed_rpm",
    "Torque [Nm]": "torque_nm",
    "Tool wear [min]": "tool_wear_min",
}
AI4I_MODES = ("TWF", "HDF", "PWF", "OSF", "RNF")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_training_csv(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Columns and one label per row.

    AI4I files are recognised by their headers; the label is the first failure mode
    set (TWF, HDF, PWF, OSF, RNF), ``none`` for healthy rows and ``unknown`` for the
    few rows flagged as failures without a mode. Any other CSV must have numeric
    feature columns and an optional ``label`` column.
    """
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no rows")
    header = set(rows[0])
    if set(AI4I_COLUMNS) <= header:
        cols = {new: np.array([float(r[old]) for r in rows]) for old, new in AI4I_COLUMNS.items()}
        modes = np.array([[r[m] == "1" for m in AI4I_MODES] for r in rows])
        failed = np.array([r["Machine failure"] == "1" for r in rows])
        labels = np.where(modes.any(axis=1), np.array(AI4I_MODES)[modes.argmax(axis=1)], "none")
        labels = np.where(failed & ~modes.any(axis=1), "unknown", labels)
        return cols, labels
    names = [h for h in rows[0] if h != "label"]
    cols = {h: np.array([float(r[h]) for r in rows]) for h in names}
    labels = np.array([r.get("label") or "none" for r in rows])
    return cols, labels
