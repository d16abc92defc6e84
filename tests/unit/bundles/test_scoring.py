"""Scoring rules: single-modality judgement, gate-only bundles, classifier on/off,
per-row errors, and numeric agreement between paths."""

from __future__ import annotations

import math
from pathlib import Path
from types import MappingProxyType

import numpy as np
import orjson
import pytest
import torch

from serve_ml.bundles.batch import Reading, score_readings
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.kinds.dense import build_module
from serve_ml.bundles.scoring import XGB_ABSENT, XGB_DISABLED
from serve_ml.bundles.simulation import (
    LIVE_WALK_READINGS,
    MECHANICAL,
    PROFILES,
    THERMAL,
    MachineSpec,
    simulate,
    simulate_dataset,
)
from serve_ml.core.errors import FeatureError
from serve_ml.pipelines.simulator import Machine, ReadingSource


@pytest.fixture(scope="module")
def cat(demo_root: Path) -> Catalog:
    return Catalog.scan(demo_root)


def rows(profile: str, n: int, seed: int = 3, power: str = "7.5kW") -> list[dict[str, float]]:
    cols = simulate(n, spec=MachineSpec.for_power(power), profile=profile, rng=np.random.default_rng(seed))
    return [{k: float(v[i]) for k, v in cols.items()} for i in range(n)]


def one(cat: Catalog, features: dict[str, float], eq: str = "press-02", power: str | None = "7.5kW",
        xgb: bool = False):
    (res,) = score_readings(cat, [Reading(eq, features, power)], enable_xgb=xgb)
    return res


def test_full_reading_scores_every_modality(cat: Catalog) -> None:
    r = one(cat, rows("normal", 1)[0])
    assert r["modalities"]["thermal"]["status"] == "scored"
    assert r["modalities"]["mechanical"]["status"] == "scored"
    expect = max(m["error"] / m["threshold"] for m in r["modalities"].values())
    assert math.isclose(r["score"], expect) and r["anomaly"] is (r["score"] > 1)


def test_single_modality_judged_by_its_threshold_only(cat: Catalog) -> None:
    # A heat-dissipation fault shows in the thermal modality ...
    hot = rows("heat_dissipation", 1)[0]
    thermal_only = {k: hot[k] for k in THERMAL}
    r = one(cat, thermal_only)
    assert r["modalities"]["mechanical"] == {"status": "absent", "threshold": r["modalities"]["mechanical"]["threshold"]}
    assert r["modalities"]["thermal"]["anomaly"] is True and r["anomaly"] is True
    # ... while a wildly wrong mechanical value that is not sent cannot flag anything.
    normal = rows("normal", 1)[0]
    r = one(cat, {k: normal[k] for k in THERMAL})
    assert r["anomaly"] is False
    assert r["score"] == pytest.approx(r["modalities"]["thermal"]["error"] / r["modalities"]["thermal"]["threshold"])


def test_a_missing_sensor_leaves_its_modality_out_and_is_reported(cat: Catalog) -> None:
    """A dead sensor must not silence the machine: the complete modalities are scored,
    the incomplete one is reported absent with what it misses."""
    f = rows("normal", 1)[0]
    del f["current_a"]
    got = one(cat, f)
    assert not isinstance(got, FeatureError), got
    assert got["modalities"]["mechanical"] == {"status": "absent", "threshold": got["modalities"]["mechanical"][
        "threshold"], "missing": ["current_a"]}
    assert got["modalities"]["thermal"]["status"] == "scored"


def test_no_complete_modality_names_every_missing_feature(cat: Catalog) -> None:
    f = {"air_temp_k": 300.0, "current_a": 8.0}
    err = one(cat, f)
    assert isinstance(err, FeatureError) and err.status_code == 422
    assert "process_temp_k" in err.detail["features"] and "mechanical" in err.message


def test_unknown_feature_is_named(cat: Catalog) -> None:
    f = {**rows("normal", 1)[0], "flux_capacitor": 1.21}
    err = one(cat, f)
    assert isinstance(err, FeatureError) and "flux_capacitor" in err.message


def test_no_features_and_one_feature_are_refused_with_a_reason(cat: Catalog) -> None:
    """Degenerate groups (no names, a single name) reach the feature check, not a crash."""
    for features in ({}, {"air_temp_k": 300.0}):
        err = one(cat, features)
        assert isinstance(err, FeatureError) and err.status_code == 422, features
        assert "no modality is complete" in err.message or "missing" in err.message


def test_non_finite_row_fails_alone(cat: Catalog) -> None:
    good = rows("normal", 2)
    bad = {**good[0], "torque_nm": float("nan")}
    out = score_readings(cat, [Reading("press-02", good[0], "7.5kW"), Reading("press-02", bad, "7.5kW"),
                               Reading("press-02", good[1], "7.5kW")], enable_xgb=False)
    assert isinstance(out[1], FeatureError) and out[1].detail["features"] == {"torque_nm": "not a finite number"}
    assert isinstance(out[0], dict) and isinstance(out[2], dict)


def test_classifier_runs_only_when_enabled(cat: Catalog) -> None:
    f = rows("overstrain", 1)[0]
    off = one(cat, f, xgb=False)
    assert off["classifier"] == {"status": "skipped", "reason": XGB_DISABLED}
    on = one(cat, f, xgb=True)
    assert on["classifier"]["status"] == "ran"
    probs = on["classifier"]["probabilities"]
    assert set(probs) == {"none", "HDF", "OSF", "PWF", "TWF"} and math.isclose(sum(probs.values()), 1, rel_tol=1e-5)
    assert on["classifier"]["label"] == "OSF"


def test_classifier_skipped_when_its_features_are_absent(cat: Catalog) -> None:
    f = rows("normal", 1)[0]
    r = one(cat, {k: f[k] for k in THERMAL}, xgb=True)
    assert r["classifier"]["status"] == "skipped"
    assert r["classifier"]["reason"].startswith("classifier features missing: speed_rpm")


def test_gate_only_bundle(cat: Catalog) -> None:
    r = one(cat, rows("normal", 1)[0], eq="pump-03", xgb=True)
    assert r["classifier"] == {"status": "skipped", "reason": XGB_ABSENT}
    assert r["power"] == "7.5kW"


def test_single_and_bulk_agree(cat: Catalog) -> None:
    rs = rows("normal", 20) + rows("tool_wear", 20)
    bulk = score_readings(cat, [Reading("press-02", r) for r in rs], enable_xgb=True)
    single = [one(cat, r, power=None, xgb=True) for r in rs]
    for a, b in zip(bulk, single, strict=True):
        assert a["power"] == b["power"] and a["anomaly"] == b["anomaly"]
        assert a["score"] == pytest.approx(b["score"], rel=1e-12)
        assert a["classifier"]["status"] == b["classifier"]["status"]
        if a["classifier"]["status"] == "ran":
            assert a["classifier"]["probabilities"] == pytest.approx(b["classifier"]["probabilities"], rel=1e-6)
    assert any(r["classifier"]["status"] == "ran" for r in bulk)  # press-02's gate flags the worn tools


def test_numpy_forward_matches_torch(cat: Catalog) -> None:
    b = cat.live_bundle("press-02", "7.5kW")
    mod = b.modalities["mechanical"]
    spec = b.manifest.modalities["mechanical"]
    module = build_module(len(spec.features), spec.model).double()
    module.load_state_dict({k: v.double() for k, v in torch.load(b.path / spec.weights, weights_only=True).items()})
    x = np.random.default_rng(0).normal(size=(50, len(spec.features)))
    with torch.inference_mode():
        want = module(torch.from_numpy(x)).numpy()
    assert np.allclose(mod.model.reconstruct(x.copy()), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("eq", ["press-02", "pump-03"])
def test_demo_bundles_flag_faults_and_stay_quiet_on_normal(cat: Catalog, eq: str) -> None:
    for power in ("5.5kW", "7.5kW"):
        for profile in PROFILES:
            rs = rows(profile, 200, seed=11, power=power)
            out = score_readings(cat, [Reading(eq, r, power) for r in rs], enable_xgb=False)
            rate = np.mean([r["anomaly"] for r in out])
            if profile == "normal":
                assert rate <= 0.05, (eq, power, rate)
            else:
                assert rate >= 0.9, (eq, power, profile, rate)


@pytest.mark.parametrize("eq", ["press-02", "pump-03"])
def test_demo_gates_stay_quiet_on_a_normal_machines_live_readings(cat: Catalog, eq: str) -> None:
    # 16 of the live simulator's air-temperature walks, not one: a gate trained on
    # a single long walk passes rows from its own stretch and flags the others.
    for power in ("5.5kW", "7.5kW"):
        source = ReadingSource(Machine(eq, power), seed=21)
        rs = [orjson.loads(source.next_payload())["features"] for _ in range(16 * LIVE_WALK_READINGS)]
        out = score_readings(cat, [Reading(eq, r, power) for r in rs], enable_xgb=False)
        assert np.mean([r["anomaly"] for r in out]) <= 0.05, (eq, power)


def test_training_walks_restart_as_the_live_simulators_do() -> None:
    spec = MachineSpec.for_power("7.5kW")
    one, _ = simulate_dataset(2048, 10, spec=spec, seed=4)
    walks, labels = simulate_dataset(2048, 10, spec=spec, seed=4, walk_readings=512)
    assert len(labels) == 2048 + 40 and set(walks) == set(one)
    steps = np.abs(np.diff(walks["air_temp_k"][:2048]))
    # each walk starts afresh: the three largest steps are where one walk ends and the next begins ...
    assert set(np.argsort(steps)[-3:].tolist()) == {511, 1023, 1535}
    assert np.median(steps) < 0.1  # ... and walks in small steps within
    wear = walks["tool_wear_min"][:2048]
    back = np.diff(wear) < 0
    assert np.all(wear[1:][back] < 1)  # tool wear runs on across walks, back to 0 only at a tool change
    with pytest.raises(ValueError, match="walk_readings must be at least 1"):
        simulate_dataset(10, 1, spec=spec, seed=4, walk_readings=0)


def test_mechanical_features_cover_simulator() -> None:
    assert set(MECHANICAL) | set(THERMAL) == set(simulate(1, spec=MachineSpec(), rng=np.random.default_rng(0)))


def test_the_order_names_are_written_in_changes_no_score(cat: Catalog) -> None:
    # A group whose dicts all share one order reads their values without lookups; a
    # group of mixed orders, and mappings that are not dicts, take the lookups.
    rs = rows("normal", 12) + rows("tool_wear", 12)
    sorted_rs = [dict(sorted(r.items())) for r in rs]
    reversed_rs = [dict(reversed(r.items())) for r in rs]
    mixed = [s if i % 2 else v for i, (s, v) in enumerate(zip(sorted_rs, reversed_rs, strict=True))]
    proxies = [MappingProxyType(r) for r in reversed_rs]
    results = [score_readings(cat, [Reading("press-02", f) for f in variant], enable_xgb=True)
               for variant in (rs, sorted_rs, reversed_rs, mixed, proxies)]
    first = results[0]
    assert any(r["anomaly"] for r in first) and not all(r["anomaly"] for r in first)
    for other in results[1:]:
        assert [r["score"] for r in other] == [r["score"] for r in first]
        assert [r["classifier"] for r in other] == [r["classifier"] for r in first]
