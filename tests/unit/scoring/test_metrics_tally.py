"""Readings are counted from their group arrays exactly as their verdict dicts say:
same series, same numbers."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serve_ml.bundles.batch import Reading, score_groups, score_readings
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.scoring import GATE_PASSED
from serve_ml.core.errors import FeatureError, ServeMLError
from serve_ml.scoring.metrics import UNKNOWN, Metrics
from tests.samples import mixed_readings


class _Recorder(Metrics):
    """Ray's recorder replaced by a list of what would be recorded."""

    def __init__(self) -> None:
        self.records: list[tuple[Counter, Counter, Counter]] = []

    def record(self, outcome: Any, modal: Any, clf: Any, elapsed_ms: float, classifier_s: Any = None) -> None:
        self.records.append((outcome, modal, clf))


def from_verdicts(known: set[str], readings: list[Reading], results: list) -> tuple[Counter, Counter, Counter]:
    """The reference: one count per reading, read off its verdict dict or error."""
    outcome: Counter = Counter()
    modal: Counter = Counter()
    clf: Counter = Counter()
    for r, res in zip(readings, results, strict=True):
        if isinstance(res, ServeMLError):
            if isinstance(res, FeatureError) and not all(map(math.isfinite, r.features.values())):
                eq = r.equipment_id  # a non-finite row: an error of its (known) equipment
            else:
                eq = res.detail.get("equipment_id", UNKNOWN)
            outcome[(eq if eq in known else UNKNOWN, "error")] += 1
            continue
        eq = res["equipment_id"]
        outcome[(eq, "anomaly" if res["anomaly"] else "normal")] += 1
        for name, m in res["modalities"].items():
            if res["anomaly"] and m.get("anomaly"):
                modal[(eq, name)] += 1
        status = res["classifier"]["status"]
        clf[(eq, "gate_passed" if res["classifier"].get("reason") == GATE_PASSED else status)] += 1
    return outcome, modal, clf


@pytest.mark.parametrize("fleet", ["demo", "cascade", "rul"])
@pytest.mark.parametrize("xgb", [False, True])
def test_group_tallies_equal_per_reading_tallies(request: pytest.FixtureRequest, demo_root: Path, xgb: bool,
                                                 fleet: str) -> None:
    cat = Catalog.scan(demo_root if fleet == "demo" else request.getfixturevalue(f"{fleet}_root"))
    readings = mixed_readings(200, 5)
    recorder = _Recorder()
    recorder.scored_groups(cat.live_equipment, list(score_groups(cat, readings, enable_xgb=xgb)), 1.0)
    outcome, modal, clf = recorder.records[0]
    want = from_verdicts(set(cat.live_equipment), readings, score_readings(cat, readings, enable_xgb=xgb))
    assert (outcome, modal, clf) == want
    assert sum(modal.values()) > 0 and outcome[(UNKNOWN, "error")] > 0
    assert any(o == "error" and eq != UNKNOWN for eq, o in outcome)  # non-finite rows, under their equipment
    if fleet == "cascade" and xgb:  # both of the cascade's branches were counted
        assert clf[("press-02", "ran")] > 0 and clf[("press-02", "gate_passed")] > 0, clf


def test_columnar_cascade_counts_what_its_answer_says(cascade_root: Path) -> None:
    from serve_ml.bundles.columns import CLASSIFIER_S, score_columns
    from tests.samples import sim_rows

    rows = sim_rows("normal", 300, "7.5kW", seed=4)
    columns = {f: np.array([r[f] for r in rows]) for f in rows[0]}
    result = score_columns(Catalog.scan(cascade_root), "press-02", "7.5kW", None, columns, len(rows), enable_xgb=True)
    recorder = _Recorder()
    recorder.scored_columns(result, 1.0, result.pop(CLASSIFIER_S))
    _, _, clf = recorder.records[0]
    ran = sum(label is not None for label in result["classifier"]["label"])
    assert clf == {("press-02", "ran"): ran, ("press-02", "gate_passed"): len(rows) - ran} and 0 < ran < len(rows)
