"""A new model kind is one module plus one registration: shown with a kind that
exists only in this test (a linear PCA autoencoder), built, loaded, validated and
scored through the same code as the shipped kinds, with no other edit."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
from pydantic import Field

from serve_ml.bundles import kinds
from serve_ml.bundles.builder import BuildSpec, build_bundle
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.kinds.base import KindSpec, ModelKind, Progress
from serve_ml.bundles.loader import load_bundle
from serve_ml.bundles.manifest import Manifest
from serve_ml.bundles.scoring import score_group
from serve_ml.bundles.simulation import MachineSpec, simulate_dataset
from serve_ml.core.errors import BundleInvalid
from tests.conftest import MODS, TORQUE_SPEED


class PcaSpec(KindSpec):
    kind: Literal["pca_test"] = "pca_test"
    components: int = Field(ge=1)


class PcaScorer:
    def __init__(self, basis: np.ndarray) -> None:
        self.basis = basis  # (components, features), orthonormal rows

    def errors(self, x: np.ndarray) -> np.ndarray:
        back = (x @ self.basis.T) @ self.basis
        return np.mean((x - back) ** 2, axis=1)


class PcaKind(ModelKind):
    name = "pca_test"
    spec = PcaSpec

    def default_spec(self, n_features: int, options: Mapping[str, Any]) -> PcaSpec:
        return PcaSpec(components=max(1, n_features - 1))

    def expected_shapes(self, n_features: int, spec: KindSpec) -> dict[str, tuple[int, ...]]:
        assert isinstance(spec, PcaSpec)
        return {"basis": (spec.components, n_features)}

    def scorer(self, state: dict[str, torch.Tensor], spec: KindSpec) -> PcaScorer:
        return PcaScorer(state["basis"].double().numpy())

    def fit(self, x: np.ndarray, spec: KindSpec, *, seed: int, epochs: int, batch_size: int,
            progress: Progress, label: str) -> dict[str, torch.Tensor]:
        assert isinstance(spec, PcaSpec)
        _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
        return {"basis": torch.from_numpy(vt[: spec.components].copy()).float()}


@pytest.fixture()
def pca_kind() -> Iterator[None]:
    kinds.register(PcaKind())
    yield
    kinds.unregister("pca_test")


def _build(root: Path, kind: str) -> Path:
    cols, labels = simulate_dataset(800, 60, spec=MachineSpec.for_power("7.5kW"), seed=3)
    spec = BuildSpec(equipment_id="m", power="7.5kW", model_version="1.0.0", power_range_kw=(0.0, 100.0),
                     power_source=TORQUE_SPEED, modalities=MODS, classifier=False, seed=3, kind=kind)
    path, _ = build_bundle(spec, cols, labels, root, data="simulator:test", progress=lambda _m: None)
    return path


def test_a_registered_kind_builds_loads_and_scores(tmp_path: Path, pca_kind: None) -> None:
    path = _build(tmp_path, "pca_test")
    manifest = json.loads((path / "manifest.json").read_text())
    assert {m["model"]["kind"] for m in manifest["modalities"].values()} == {"pca_test"}
    bundle = load_bundle(path, tmp_path)  # checksums, shapes, warm-up replay as for any kind
    assert isinstance(bundle.manifest.modalities["thermal"].model, PcaSpec)

    cols, labels = simulate_dataset(400, 80, spec=MachineSpec.for_power("7.5kW"), seed=11)
    feats = sorted(set(MODS["thermal"]) | set(MODS["mechanical"]))
    g = score_group(bundle, {f: cols[f] for f in feats}, len(labels), enable_xgb=False)
    normal, faulty = labels == "none", labels != "none"
    # a real model: faulty rows are flagged far more often than normal ones
    assert g.anomaly[faulty].mean() > 3 * max(g.anomaly[normal].mean(), 0.01)
    assert Catalog.scan(tmp_path).bundles  # and the catalog serves it


def test_the_manifest_round_trips_a_kind_it_was_never_edited_for(tmp_path: Path, pca_kind: None) -> None:
    path = _build(tmp_path, "pca_test")
    m = Manifest.model_validate_json((path / "manifest.json").read_bytes())
    again = Manifest.model_validate(json.loads(m.model_dump_json()))
    assert again == m and again.modalities["thermal"].model.kind == "pca_test"


def test_an_unregistered_kind_is_refused_by_name(tmp_path: Path, pca_kind: None) -> None:
    path = _build(tmp_path, "pca_test")
    kinds.unregister("pca_test")
    with pytest.raises(BundleInvalid, match="unknown model kind 'pca_test'"):
        load_bundle(path, tmp_path)
    kinds.register(PcaKind())  # the fixture unregisters it again


def test_a_kind_with_bad_parameters_is_refused_by_its_own_spec(tmp_path: Path, pca_kind: None) -> None:
    path = _build(tmp_path, "pca_test")
    doc = json.loads((path / "manifest.json").read_text())
    doc["modalities"]["thermal"]["model"]["components"] = 0
    with pytest.raises(ValueError, match="components"):
        Manifest.model_validate(doc)


def test_names_are_unique_and_built_ins_stay() -> None:
    with pytest.raises(ValueError, match="already registered"):
        kinds.register(kinds.get("dense_autoencoder"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="built in"):
        kinds.unregister("dense_autoencoder")
    with pytest.raises(ValueError, match="cannot be trained"):
        _build(Path("/nonexistent-never-created"), "no_such_kind")
