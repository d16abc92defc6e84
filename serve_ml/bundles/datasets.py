"""Readers for training data: the AI4I 2020 CSV (UCI, CC BY 4.0) and anyone's CSV.

Labels come back normalised: ``none`` for normal rows, the fault mode (or another
label) otherwise, ``unknown`` for rows known to be faulty without a mode.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serve_ml.bundles.derived import DerivedFeature

# AI4I column -> serve-ml feature name (units in the name, as everywhere here).
AI4I_COLUMNS = {
    "Air temperature [K]": "air_temp_k",
    "Process temperature [K]": "process_temp_k",
    "Rotational speed [rpm]": "speed_rpm",
    "Torque [Nm]": "torque_nm",
    "Tool wear [min]": "tool_wear_min",
}
AI4I_MODES = ("TWF", "HDF", "PWF", "OSF", "RNF")
# AI4I's product quality variant, L/M/H, as a number the classifier can split on.
AI4I_TYPE_CODES = {"L": 0.0, "M": 1.0, "H": 2.0}
NORMAL = "none"

# What the builder uses on an AI4I file unless told otherwise: the physics the
# dataset's failure modes depend on (power, heat dissipation, overstrain).
AI4I_DERIVED = [
    DerivedFeature(name="power_w", op="power_w", inputs=["torque_nm", "speed_rpm"]),
    DerivedFeature(name="delta_t_k", op="difference", inputs=["process_temp_k", "air_temp_k"]),
    DerivedFeature(name="torque_x_wear", op="product", inputs=["torque_nm", "tool_wear_min"]),
]
AI4I_CLASSIFIER_FEATURES = [*AI4I_COLUMNS.values(), "type_code", "power_w", "delta_t_k", "torque_x_wear"]


class DatasetError(ValueError):
    """The file cannot give what was asked of it; the message names the column or row."""


@dataclass(frozen=True)
class Ordering:
    """When each row was taken and on which unit (machine), for splits that respect
    time: ``time`` as seconds (a numeric column as is, ISO-8601 as POSIX seconds),
    ``unit`` as text. Either may be None."""

    time: np.ndarray | None = None
    unit: np.ndarray | None = None
    time_column: str | None = None
    unit_column: str | None = None


def read_ordering(path: Path, *, sep: str | None = None, time_column: str | None = None,
                  unit_column: str | None = None) -> Ordering:
    """The time and unit columns of a CSV (only those are parsed)."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f, delimiter=sep or _sniff(path))
        header = list(reader.fieldnames or [])
        for column, flag in ((time_column, "--time-column"), (unit_column, "--unit-column")):
            if column is not None and column not in header:
                raise DatasetError(f"{path}: no {flag} {column!r}; columns are {header}")
        wanted = [c for c in (time_column, unit_column) if c is not None]
        rows = [[r[c] for c in wanted] for r in reader]
    times = _times(path, [r[0] for r in rows], time_column) if time_column is not None else None
    units = np.array([r[-1].strip() for r in rows]) if unit_column is not None else None
    if units is not None and (units == "").any():
        bad = int(np.flatnonzero(units == "")[0])
        raise DatasetError(f"{path}: column {unit_column!r} row {bad + 2} is empty (every row needs its unit)")
    return Ordering(times, units, time_column, unit_column)


def _times(path: Path, values: list[str], column: str) -> np.ndarray:
    """Numbers as they are; else ISO-8601 times (naive ones taken as UTC) as POSIX seconds."""
    try:
        return np.array([float(v) for v in values])
    except ValueError:
        pass
    out = np.empty(len(values))
    for i, v in enumerate(values):
        try:
            t = dt.datetime.fromisoformat(v.strip())
        except ValueError:
            raise DatasetError(f"{path}: column {column!r} row {i + 2}: {v!r} is neither a number nor an "
                               "ISO-8601 time") from None
        out[i] = (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
    return out


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _sniff(path: Path) -> str:
    with Path(path).open(newline="") as f:
        head = f.read(16384)
    try:
        return csv.Sniffer().sniff(head, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def csv_header(path: Path, sep: str | None = None) -> list[str]:
    with Path(path).open(newline="") as f:
        return next(csv.reader(f, delimiter=sep or _sniff(path)), [])


def is_ai4i(header: Iterable[str]) -> bool:
    return set(AI4I_COLUMNS) | {"Machine failure", "Type"} <= set(header)


def read_training_csv(path: Path, *, sep: str | None = None, label_column: str | None = None,
                      normal_label: str | None = None,
                      columns: Iterable[str] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Columns (float64) and one normalised label per row.

    AI4I files are recognised by their headers: the label is the first failure mode
    set on a row whose ``Machine failure`` is 1 (``unknown`` when none is), ``none``
    when it is 0; ``Type`` becomes ``type_code``. Any other CSV: only ``columns`` are
    parsed (all but the label column when not given); the label column (default
    ``label``, optional) marks normal rows with ``normal_label`` (default ``none``,
    or ``0`` for a 0/1 column).
    """
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f, delimiter=sep or _sniff(path))
        rows = list(reader)
        header = list(reader.fieldnames or [])
    if not rows:
        raise DatasetError(f"{path}: no rows")
    if label_column is None and is_ai4i(header):
        return _ai4i(path, rows, columns)
    label_column = label_column or ("label" if "label" in header else None)
    if label_column is not None and label_column not in header:
        raise DatasetError(f"{path}: no label column {label_column!r}; columns are {header}")
    wanted = list(columns) if columns is not None else [h for h in header if h != label_column]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DatasetError(f"{path}: no column(s) {missing}; columns are {header}")
    cols = {c: _floats(path, rows, c) for c in wanted}
    if label_column is None:
        return cols, np.full(len(rows), NORMAL)
    as_int = {"0.0": "0", "1.0": "1"}
    raw = np.array([as_int.get(v, v) for v in ((r.get(label_column) or "").strip() for r in rows)])
    if normal_label is None:
        normal_label = "0" if set(raw.tolist()) <= {"0", "1"} else NORMAL
    labels = np.where(raw == normal_label, NORMAL, raw)
    labels = np.where(labels == "", "unknown", labels)
    if normal_label == "0":
        labels = np.where(labels == "1", "anomaly", labels)
    return cols, labels


def _floats(path: Path, rows: list[dict[str, str]], column: str) -> np.ndarray:
    try:
        return np.array([float(r[column]) for r in rows])
    except (TypeError, ValueError):
        bad = next(i for i, r in enumerate(rows) if not _is_float(r[column]))
        raise DatasetError(f"{path}: column {column!r} row {bad + 2}: {rows[bad][column]!r} is not a number") from None


def _is_float(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
        return True
    except (TypeError, ValueError):
        return False


def _ai4i(path: Path, rows: list[dict[str, str]],
          columns: Iterable[str] | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    cols = {new: _floats(path, rows, old) for old, new in AI4I_COLUMNS.items()}
    try:
        cols["type_code"] = np.array([AI4I_TYPE_CODES[r["Type"]] for r in rows])
    except KeyError as exc:
        raise DatasetError(f"{path}: Type {exc} is not one of L, M, H") from None
    modes = np.array([[r[m] == "1" for m in AI4I_MODES] for r in rows])
    failed = np.array([r["Machine failure"] == "1" for r in rows])
    first = np.array(AI4I_MODES)[modes.argmax(axis=1)]
    labels = np.where(failed, np.where(modes.any(axis=1), first, "unknown"), NORMAL)
    if columns is not None:
        missing = [c for c in columns if c not in cols]
        if missing:
            raise DatasetError(f"{path}: an AI4I file has no column(s) {missing}; it gives {sorted(cols)}")
    return cols, labels
