"""Bulk requests are counted from their group arrays exactly as single readings are
counted from their verdict dicts (same series, same numbers)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bundles.batch import score_groups, score_readings
from bundles.catalog import Catalog
from deployments.metrics import UNKNOWN, Metrics
from serve_ml.errors import FeatureError
from tests.unit.bundles.test_rowjson import mixed_readings


class _Recorder(Metrics):
    """Ray's recorder replaced by a list of what would be recorded."""

    def __init__(self) -> None:
        self.records: list[tuple[Counter, Counter, Counter]] = []

    def record(self, outcome: Any, modal: Any, clf: Any, elapsed_ms: float) -> None:
        self.records.append((outcome, modal, clf))


@pytest.mark.parametrize("xgb", [False, True])
def test_group_tallies_equal_per_reading_tallies(demo_root: Path, xgb: bool) -> None:
    cat = Catalog.scan(demo_root)
    readings = mixed_readings(200, 5)
    by_dict, by_group = _Recorder(), _Recorder()
    results = score_readings(cat, readings, enable_xgb=xgb)
    by_dict.scored(cat.live_equipment, results, 1.0)
    by_group.scored_groups(cat.live_equipment, list(score_groups(cat, readings, enable_xgb=xgb)), 1.0)
    (outcome_d, modal_d, clf_d), (outcome_g, modal_g, clf_g) = by_dict.records[0], by_group.records[0]
    assert modal_g == modal_d and clf_g == clf_d and sum(modal_g.values()) > 0
    # A non-finite value's error carries no equipment id in the verdict dict, so the
    # per-reading count files it under "unknown"; the group knows its equipment.
    bad: Counter[tuple[str, str]] = Counter()
    for r, res in zip(readings, results, strict=True):
        if isinstance(res, FeatureError) and not all(map(math.isfinite, r.features.values())):
            bad[(r.equipment_id, "error")] += 1
    assert sum(bad.values()) > 0
    moved = outcome_d.copy()
    moved[(UNKNOWN, "error")] -= sum(bad.values())
    moved.update(bad)
    assert +moved == outcome_g
