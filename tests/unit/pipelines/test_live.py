"""The live message the stream writer sends per equipment and batch: the newest
verdict as the HTTP answer gives it (class probabilities, RUL with its band and
unit), the raw sensors at the charted instants, and a payload PostgreSQL accepts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import orjson
import pytest

from serve_ml.bundles.batch import Reading, score_readings
from serve_ml.bundles.catalog import Catalog
from serve_ml.pipelines.encode import Origin, encode_scored
from serve_ml.pipelines.live import MAX_PAYLOAD_BYTES, verdict_message
from serve_ml.pipelines.verdicts import Judged
from tests.samples import mixed_power_rows
from tests.stored_rows import T0


def judged(cat: Catalog, readings: list[Reading], step_s: float = 1.0) -> tuple[list[Judged], list[dict]]:
    """The writer's groups for ``readings`` (time order = list order) and the HTTP answers."""
    origins = [Origin(T0 + dt.timedelta(seconds=i * step_s), r.features, "kafka", 0, i, None)
               for i, r in enumerate(readings)]
    rows, rejected = encode_scored(cat, readings, origins, enable_xgb=True)
    assert rejected == []
    return rows.judged, score_readings(cat, readings, enable_xgb=True)


def test_newest_verdict_carries_the_class_probabilities_and_each_sensor_is_charted(demo_root: Path) -> None:
    rows = mixed_power_rows(12)
    readings = [Reading("press-02", r, "7.5kW") for r in rows]
    groups, answers = judged(Catalog.scan(demo_root), readings)
    doc = orjson.loads(verdict_message(groups, "normal", []))
    last = answers[-1]
    assert doc["last"]["fault_label"] == last["classifier"]["label"]
    assert doc["last"]["fault_probabilities"] == pytest.approx(last["classifier"]["probabilities"])
    assert doc["last"]["rul"] is None and doc["last"]["rul_band"] is None  # no head in this bundle
    # 12 rows: every one charted, each sensor's raw values in time order (float32 on the wire)
    assert len(doc["points"]["t_ms"]) == 12
    assert set(doc["points"]["sensors"]) == set(rows[0])
    for f, values in doc["points"]["sensors"].items():
        assert values == pytest.approx([r[f] for r in rows], rel=1e-6), f


def test_newest_verdict_carries_the_rul_band_and_unit(rul_root: Path) -> None:
    readings = [Reading("press-02", r, "7.5kW") for r in mixed_power_rows(8)]
    groups, answers = judged(Catalog.scan(rul_root), readings)
    doc = orjson.loads(verdict_message(groups, "normal", []))
    rul = answers[-1]["rul"]
    assert doc["last"]["rul"] == pytest.approx(rul["value"])
    assert doc["last"]["rul_band"] == {"lower": pytest.approx(rul["lower"]), "upper": pytest.approx(rul["upper"]),
                                       "unit": rul["unit"]}
    assert rul["lower"] <= rul["value"] <= rul["upper"]


def test_a_large_batch_fits_a_notification_and_keeps_the_newest_point(demo_root: Path) -> None:
    rows = mixed_power_rows(2000)
    readings = [Reading("press-02", r, "7.5kW") for r in rows]
    groups, _ = judged(Catalog.scan(demo_root), readings, step_s=0.01)
    text = verdict_message(groups, "warning", [{"type": "threshold", "sensor": "air_temp_k", "level": "warning"}])
    doc = orjson.loads(text)
    assert len(text.encode()) <= MAX_PAYLOAD_BYTES
    assert doc["n"] == 2000 and 2 <= len(doc["points"]["t_ms"]) <= 60
    newest = int((T0 + dt.timedelta(seconds=1999 * 0.01)).timestamp() * 1000)
    assert doc["points"]["t_ms"][-1] == newest
    for f, values in doc["points"]["sensors"].items():
        assert len(values) == len(doc["points"]["t_ms"])
        assert values[-1] == pytest.approx(np.float32(rows[-1][f]), rel=1e-6), f
