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
from bundles.scoring import Result, materialise, score_group
from serve_ml.errors import ServeMLError


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
