"""The stream's data-quality gate: values that are not measurements are kept out
of the model and raise sensor-fault alarms (``pipelines.alarms.SENSOR_FAULT``).

* **out of range**: outside the sensor's physical range (``valid_min`` /
  ``valid_max`` of its thresholds, at any scope);
* **flatline**: the same value ``SERVE_ML_FLATLINE_READINGS`` times in a row (a
  frozen transmitter or a stuck ADC repeats its last value);
* **missing**: a sensor of a modality whose other sensors report (found by the
  scorer: the modality is left out, see ``bundles.scoring.check_feature_names``).

Vectorised per scored group: a few numpy operations per sensor, no per-reading
Python. Flatline runs carry over from batch to batch in this scorer's memory; a
restarted scorer counts them afresh.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from serve_ml.bundles.scoring import FAULT_FLATLINE, FAULT_OUT_OF_RANGE
from serve_ml.operations.thresholds import EMPTY_BOOK, ThresholdBook, out_of_range


class SensorScreen:
    def __init__(self, flatline_readings: int) -> None:
        self.book: ThresholdBook = EMPTY_BOOK  # set by the scorer as the thresholds change
        self.flatline_readings = flatline_readings
        self._runs: dict[tuple[str, str], tuple[float, int]] = {}  # (equipment, sensor) -> (last value, run)

    def __call__(self, equipment_id: str, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        applied = self.book.applied(equipment_id) if self.book else {}
        out: dict[str, np.ndarray] = {}
        for name, col in columns.items():
            if col.ndim != 1 or not len(col):
                continue
            codes: np.ndarray | None = None
            a = applied.get(name)
            if a is not None:
                outside = out_of_range(a.limits, col)
                if outside is not None and outside.any():
                    codes = np.where(outside, FAULT_OUT_OF_RANGE, 0).astype(np.int8)
            if self.flatline_readings:
                flat = self._flatline(equipment_id, name, col)
                if flat is not None:
                    codes = np.where(flat, FAULT_FLATLINE, 0).astype(np.int8) if codes is None else \
                        np.where((codes == 0) & flat, FAULT_FLATLINE, codes).astype(np.int8)
            if codes is not None and codes.any():
                out[name] = codes
        return out

    def _flatline(self, eq: str, name: str, col: np.ndarray) -> np.ndarray | None:
        """Rows that repeat the value before them for the ``flatline_readings``-th time or more."""
        n = len(col)
        last, run = self._runs.get((eq, name), (np.nan, 0))
        same = np.empty(n, dtype=bool)
        same[0] = col[0] == last
        np.equal(col[1:], col[:-1], out=same[1:])
        idx = np.arange(n)
        # the run length at each row: rows since the last change, plus the carried run
        # when no change happened in this batch yet
        starts = np.maximum.accumulate(np.where(same, -1, idx))
        runs = np.where(starts >= 0, idx - starts + 1, idx + 1 + run)
        self._runs[(eq, name)] = (float(col[-1]), int(runs[-1]))
        flat = runs >= self.flatline_readings
        return flat if flat.any() else None
