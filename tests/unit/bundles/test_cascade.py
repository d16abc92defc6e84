"""The gate -> classify cascade: the classifier runs on exactly the rows the gate
flags, with the probabilities it gives those rows when it runs on every row; the
other rows say why it did not run, on every path (verdict dicts here; the bulk
bytes, the stream's stored rows and the metrics in their own tests, over this
fleet too); the builder chooses it by measurement; the manifest refuses
it where there is nothing to cascade."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from serve_ml.bundles.builder import BuildSpec, build_bundle
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.columns import CLASSIFIER_S, score_columns
from serve_ml.bundles.evaluate import evaluate
from serve_ml.bundles.loader import Bundle, load_bundle
from serve_ml.bundles.manifest import Manifest
from serve_ml.bundles.scoring import GATE_PASSED, materialise, score_group
from serve_ml.bundles.simulation import MachineSpec, simulate, simulate_dataset
from tests.conftest import MODS, build_sim_bundle


@pytest.fixture(scope="module")
def bundle(cascade_root: Path) -> Bundle:
    return load_bundle(cascade_root / "press-02" / "7.5kW" / "1.0.0", cascade_root)


def _rows(n: int, seed: int) -> tuple[dict[str, np.ndarray], int]:
    """Normal rows and a stretch of each fault: the gate flags some, passes others."""
    rng = np.random.default_rng(seed)
    spec = MachineSpec.for_power("7.5kW")
    parts = [simulate(n, spec=spec, profile=p, rng=rng) for p in ("normal", "overstrain", "heat_dissipation")]
    return {f: np.concatenate([p[f] for p in parts]) for f in parts[0]}, 3 * n


def test_classifier_runs_on_exactly_the_gated_rows(bundle: Bundle) -> None:
    assert bundle.manifest.cascade == "gate_then_classify"
    cols, n = _rows(200, 1)
    g = score_group(bundle, cols, n, enable_xgb=True)
    every = score_group(bundle, cols, n, enable_xgb=True, cascade="always")
    assert g.classified is not None and every.classified is None
    np.testing.assert_array_equal(g.classified, g.anomaly)
    assert 0 < g.classified_rows() < n
    np.testing.assert_array_equal(g.anomaly, every.anomaly)  # the gate's verdict is the cascade's
    np.testing.assert_allclose(g.probabilities[g.classified], every.probabilities[g.classified], rtol=1e-6)
    assert np.isnan(g.probabilities[~g.classified]).all()
    assert g.classifier_s > 0
    for i, r in enumerate(materialise(g)):
        if g.classified[i]:
            assert r["classifier"]["status"] == "ran"
            assert r["classifier"]["label"] == bundle.classifier.spec.classes[every.labels[i]]
        else:
            assert r["classifier"] == {"status": "skipped", "reason": GATE_PASSED}


def test_nothing_gated_means_no_classifier_call(bundle: Bundle) -> None:
    cols, n = _rows(200, 2)
    g = score_group(bundle, cols, n, enable_xgb=True)
    quiet = np.flatnonzero(~g.anomaly)[:20]
    g = score_group(bundle, {f: c[quiet] for f, c in cols.items()}, len(quiet), enable_xgb=True)
    assert g.classified_rows() == 0 and g.classifier_s < 1e-3
    assert {r["classifier"]["reason"] for r in materialise(g)} == {GATE_PASSED}


def test_a_row_that_cannot_be_scored_is_not_classified(bundle: Bundle) -> None:
    cols, n = _rows(50, 3)
    cols["torque_nm"][[0, 60]] = math.nan
    g = score_group(bundle, cols, n, enable_xgb=True)
    assert not g.classified[[0, 60]].any() and set(g.bad_rows) == {0, 60}


def test_columns_answer_null_for_rows_the_gate_passed(cascade_root: Path) -> None:
    cols, n = _rows(100, 4)
    result = score_columns(Catalog.scan(cascade_root), "press-02", "7.5kW", None, cols, n, enable_xgb=True)
    assert result.pop(CLASSIFIER_S) > 0
    clf = result["classifier"]
    assert clf["cascade"] == "gate_then_classify"
    gated = np.asarray(clf["classified"])
    np.testing.assert_array_equal(gated, result["anomaly"])
    assert all((label is None) != g for label, g in zip(clf["label"], gated, strict=True))
    assert np.isnan(clf["probabilities"][~gated]).all() and not np.isnan(clf["probabilities"][gated]).any()


def test_evaluate_reports_the_classifier_alone_and_what_is_served(bundle: Bundle) -> None:
    cols, n = _rows(200, 6)
    labels = np.array(["none"] * 200 + ["overstrain"] * 200 + ["heat_dissipation"] * 200)
    report = evaluate(bundle, cols, labels)
    served, alone = report["served"], report["classifier"]
    assert served["cascade"] == "gate_then_classify"
    # The cascade can only remove fault calls: fewer or equal true and false positives.
    assert served["confusion"]["tp"] <= alone["confusion"]["tp"]
    assert served["confusion"]["fp"] <= alone["confusion"]["fp"]
    gate = report["gate"]["confusion"]
    assert served["confusion"]["tp"] <= gate["tp"] and served["confusion"]["fp"] <= gate["fp"]


def _spec(**kw: object) -> BuildSpec:
    base = {"equipment_id": "press-02", "power": "7.5kW", "model_version": "1.0.0", "power_range_kw": (0.0, 100.0),
            "modalities": MODS, "epochs": 4, "classifier_rounds": 20, "seed": 2}
    return BuildSpec(**{**base, **kw})


def test_auto_keeps_the_gate_only_when_it_costs_no_f1(tmp_path: Path) -> None:
    """The simulator's faults are loud, so its gate catches them: auto picks the
    cascade. A gate that never fires (threshold far above any error) hides every
    fault: auto keeps the classifier on every row."""
    cols, labels = simulate_dataset(600, 60, spec=MachineSpec.for_power("7.5kW"), seed=2)
    quiet = lambda _m: None  # noqa: E731
    path, metrics = build_bundle(_spec(), cols, labels, tmp_path, data="sim", progress=quiet)
    assert metrics["cascade"] == load_bundle(path, tmp_path).manifest.cascade == "gate_then_classify"
    assert metrics["cascade_f1_gate_then_classify"] >= metrics["cascade_f1_always"] - 0.01
    from serve_ml.bundles.thresholds import QuantileFactor

    blind = _spec(model_version="1.0.1", threshold_rule=QuantileFactor(q=0.99, factor=100.0))
    path, metrics = build_bundle(blind, cols, labels, tmp_path, data="sim", progress=quiet)
    assert metrics["cascade"] == load_bundle(path, tmp_path).manifest.cascade == "always"
    assert metrics["cascade_f1_gate_then_classify"] < metrics["cascade_f1_always"] - 0.01
    assert "auto" in metrics["cascade_reason"]


def test_no_classifier_or_no_gate_means_no_cascade(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="needs a gate"):
        _spec(cascade="gate_then_classify", classifier=False)
    path = build_sim_bundle(tmp_path, "pump-03", "7.5kW", "1.0.0", classifier=False, epochs=2)
    doc = json.loads((path / "manifest.json").read_text())
    assert "cascade" not in doc or doc["cascade"] == "always"
    with pytest.raises(ValidationError, match="needs both a gate"):
        Manifest.model_validate({**doc, "cascade": "gate_then_classify"})


def test_manifests_without_the_field_keep_running_the_classifier_on_every_row(demo_root: Path,
                                                                              tmp_path: Path) -> None:
    dst = shutil.copytree(demo_root / "press-02" / "7.5kW" / "1.0.0", tmp_path / "press-02" / "7.5kW" / "1.0.0")
    doc = json.loads((dst / "manifest.json").read_text())
    assert doc.pop("cascade") == "gate_then_classify"  # as a builder before the cascade wrote it
    (dst / "manifest.json").write_text(json.dumps(doc))
    b = load_bundle(dst, tmp_path)
    assert b.manifest.cascade == "always"
    cols, n = _rows(20, 7)
    g = score_group(b, cols, n, enable_xgb=True)
    assert g.classified is None and g.classified_rows() == n
