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
from serve_ml.bundles.simulation import MachineSpec, simulate
from serve_ml.pipelines.encode import Origin, encode_scored
from serve_ml.pipelines.live import MAX_PAYLOAD_BYTES, POINT_MS, chart_points, verdict_message
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
    assert last["classifier"]["status"] == "ran" and doc["last"]["classifier"] == "ran"
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


def _sim_rows(*parts: tuple[str, int]) -> list[dict[str, float]]:
    """Rows of a 7.5 kW machine: ``(profile, n)`` stretches, one after another."""
    out: list[dict[str, float]] = []
    for seed, (profile, n) in enumerate(parts):
        cols = simulate(n, spec=MachineSpec.for_power("7.5kW"), profile=profile, rng=np.random.default_rng(seed))
        out += [{f: float(v[i]) for f, v in cols.items()} for i in range(n)]
    return out


def test_behind_a_gate_the_message_carries_the_newest_verdict_the_classifier_ran_on(demo_root: Path) -> None:
    # press-02 classifies only what its gate flags: overstrained readings, then normal
    # ones the gate passes, so the newest reading has no fault label of its own
    readings = [Reading("press-02", r, "7.5kW") for r in _sim_rows(("normal", 10), ("overstrain", 5), ("normal", 6))]
    cat = Catalog.scan(demo_root)
    assert cat.get("press-02", "7.5kW", None).manifest.cascade == "gate_then_classify"
    groups, answers = judged(cat, readings)
    doc = orjson.loads(verdict_message(groups, "normal", []))
    ran = [i for i, a in enumerate(answers) if a["classifier"]["status"] == "ran"]
    assert ran and ran[-1] < len(answers) - 1, ran
    newest = answers[ran[-1]]["classifier"]
    assert doc["classified"]["fault_label"] == newest["label"] != "none"
    assert doc["classified"]["fault_probabilities"] == pytest.approx(newest["probabilities"])
    assert doc["classified"]["t_ms"] == int((T0 + dt.timedelta(seconds=ran[-1])).timestamp() * 1000)
    # the newest reading itself was not classified: its gate passed it
    assert doc["last"]["fault_label"] is None and doc["last"]["classifier"] == "gate_passed"


def test_a_bundle_without_a_classifier_sends_no_classified_verdict(demo_root: Path) -> None:
    readings = [Reading("pump-03", r, "7.5kW") for r in _sim_rows(("overstrain", 6))]
    groups, answers = judged(Catalog.scan(demo_root), readings)
    assert any(a["anomaly"] for a in answers)
    doc = orjson.loads(verdict_message(groups, "normal", []))
    assert doc["classified"] is None and doc["last"]["fault_label"] is None and doc["last"]["classifier"] is None


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


def test_a_dense_batch_charts_each_interval_s_highest_score_and_the_newest_reading(demo_root: Path) -> None:
    # 1,000 readings in half a second (a backlog drained at once): 10 intervals of
    # POINT_MS; each is charted by its highest-scoring reading, so no spike is sampled away
    readings = [Reading("press-02", r, "7.5kW") for r in mixed_power_rows(1000)]
    step_s = 0.0005
    groups, answers = judged(Catalog.scan(demo_root), readings, step_s=step_s)
    doc = orjson.loads(verdict_message(groups, "normal", []))
    t0_ms = int(T0.timestamp() * 1000)
    scores: dict[int, list[float]] = {}  # per interval, every reading's score
    for i, a in enumerate(answers):
        scores.setdefault(int(i * step_s * 1000) // POINT_MS, []).append(a["score"])
    charted: dict[int, list[float]] = {}
    for t_ms, score in zip(doc["points"]["t_ms"], doc["points"]["score"], strict=True):
        charted.setdefault((t_ms - t0_ms) // POINT_MS, []).append(score)
    assert len(scores) == 10 and doc["n"] == 1000
    assert sum(map(len, charted.values())) == 11  # one per interval, and the newest reading
    for interval, values in scores.items():
        assert max(charted[interval]) == pytest.approx(max(values), rel=1e-6), interval
    assert doc["points"]["t_ms"][-1] == t0_ms + int(999 * step_s * 1000)
    assert doc["points"]["t_ms"] == sorted(doc["points"]["t_ms"])


def test_chart_points_picks_per_interval_peaks_in_time_order() -> None:
    ms = 1000 * POINT_MS  # one interval, in µs
    t_us = np.array([0, 10, 20, ms, ms + 5, 3 * ms, 3 * ms + 1, 3 * ms + 2])
    score = np.array([1.0, 5.0, 2.0, np.nan, 0.5, 9.0, 1.0, 0.1])
    # interval 0: the 5.0; interval 1: the 0.5 (a NaN score is never a peak); interval 3:
    # the 9.0, and the newest row besides
    assert chart_points(t_us, score).tolist() == [1, 4, 5, 7]
    assert chart_points(t_us[:1], score[:1]).tolist() == [0]
