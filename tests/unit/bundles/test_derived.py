"""Derived features: declared in the manifest, computed by one function on every path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from serve_ml.bundles.builder import BuildSpec, build_bundle
from serve_ml.bundles.derived import DerivedFeature, check_order, derive, raw_inputs
from serve_ml.bundles.loader import load_bundle
from serve_ml.bundles.scoring import materialise, score_group
from serve_ml.bundles.simulation import MachineSpec, simulate_dataset
from serve_ml.core.errors import FeatureError
from tests.conftest import MODS, TORQUE_SPEED

POWER = DerivedFeature(name="power_w", op="power_w", inputs=["torque_nm", "speed_rpm"])


def test_operators_compute_what_they_say() -> None:
    cols = {"a": np.array([6.0, 1.0]), "b": np.array([3.0, 0.0])}
    specs = [DerivedFeature(name=n, op=op, inputs=["a", "b"])  # type: ignore[arg-type]
             for n, op in (("s", "sum"), ("d", "difference"), ("p", "product"), ("r", "ratio"))]
    out = derive(cols, specs)
    assert out["s"].tolist() == [9.0, 1.0] and out["d"].tolist() == [3.0, 1.0] and out["p"].tolist() == [18.0, 0.0]
    assert out["r"][0] == 2.0 and math.isnan(out["r"][1])  # a zero divisor gives NaN, never inf
    w = derive({"torque_nm": np.array([40.0]), "speed_rpm": np.array([1500.0])}, [POWER])["power_w"]
    assert w[0] == pytest.approx(40 * 1500 * 2 * math.pi / 60)


def test_chained_and_missing_inputs() -> None:
    chain = [POWER, DerivedFeature(name="kw_ratio", op="ratio", inputs=["power_w", "torque_nm"])]
    check_order(chain)
    assert raw_inputs(chain) == ["torque_nm", "speed_rpm"]
    assert "kw_ratio" in derive({"torque_nm": np.ones(1), "speed_rpm": np.ones(1)}, chain)
    assert "power_w" not in derive({"torque_nm": np.ones(1)}, chain)  # inputs absent: not computed
    with pytest.raises(ValueError, match="before they are defined"):
        check_order(list(reversed(chain)))


def test_the_vocabulary_is_closed() -> None:
    with pytest.raises(ValidationError):
        DerivedFeature(name="x", op="__import__('os')", inputs=["a", "b"])  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="takes 2 inputs"):
        DerivedFeature(name="x", op="sum", inputs=["a"])
    with pytest.raises(ValidationError):
        DerivedFeature(name="1bad name", op="sum", inputs=["a", "b"])


@pytest.fixture(scope="module")
def derived_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("derived")
    cols, labels = simulate_dataset(800, 60, spec=MachineSpec.for_power("7.5kW"), seed=2)
    mods = {**MODS, "power": ["power_w"]}
    spec = BuildSpec(equipment_id="m", power="7.5kW", model_version="1.0.0", power_range_kw=(0.0, 100.0),
                     power_source=TORQUE_SPEED, modalities=mods, seed=2, epochs=4, derived=[POWER],
                     classifier_features=[*MODS["mechanical"], "power_w"])
    path, _ = build_bundle(spec, cols, labels, root, data="simulator:test", progress=lambda _m: None)
    return root, path


def test_a_bundle_uses_a_derived_feature_clients_never_send(derived_bundle: tuple[Path, Path]) -> None:
    root, path = derived_bundle
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["derived"] == [POWER.model_dump()]
    bundle = load_bundle(path, root)  # the warm-up replay recomputes power_w too
    assert "power_w" not in bundle.known_features and "torque_nm" in bundle.known_features
    cols, _ = simulate_dataset(50, 0, spec=MachineSpec.for_power("7.5kW"), seed=9)
    inputs = {f: cols[f] for f in bundle.known_features}
    g = score_group(bundle, inputs, 50, enable_xgb=True)
    power = next(m for m in g.modalities if m.name == "power")
    assert power.present and g.classifier_ran
    assert all(isinstance(r, dict) and r["modalities"]["power"]["status"] == "scored" for r in materialise(g))


def test_sending_a_derived_feature_is_refused_by_name(derived_bundle: tuple[Path, Path]) -> None:
    root, path = derived_bundle
    bundle = load_bundle(path, root)
    cols, _ = simulate_dataset(2, 0, spec=MachineSpec.for_power("7.5kW"), seed=9)
    inputs = {f: cols[f] for f in bundle.known_features} | {"power_w": np.ones(2)}
    with pytest.raises(FeatureError) as err:
        score_group(bundle, inputs, 2, enable_xgb=True)
    assert "derived by the bundle" in err.value.detail["features"]["power_w"]  # type: ignore[index]


def test_a_manifest_using_an_undefined_order_is_invalid(derived_bundle: tuple[Path, Path]) -> None:
    from serve_ml.bundles.manifest import Manifest

    _, path = derived_bundle
    doc = json.loads((path / "manifest.json").read_text())
    doc["derived"] = [{"name": "b", "op": "sum", "inputs": ["c", "torque_nm"]},
                      {"name": "c", "op": "sum", "inputs": ["torque_nm", "speed_rpm"]}]
    with pytest.raises(ValidationError, match="before they are defined"):
        Manifest.model_validate(doc)
