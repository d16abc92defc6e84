"""Shared fixtures: small real bundles built by the project's own builder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from serve_ml.bundles.builder import BuildSpec, build_bundle
from serve_ml.bundles.demo import TORQUE_SPEED
from serve_ml.bundles.simulation import MECHANICAL, THERMAL, MachineSpec, simulate_dataset
from serve_ml.core.settings import REPO_ROOT

pytest_plugins = ["tests.fixtures"]

# Property tests judge answers, not speed: on a 2-core machine shared with a Ray
# cluster, Hypothesis's timing checks (input generation, per-example deadline) fail
# for reasons that have nothing to do with the code under test.
settings.register_profile("serve-ml", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("serve-ml")

DEMO_ROOT = REPO_ROOT / "demo-bundles"
SHARED_AI4I = REPO_ROOT.parent / "shared" / "datasets" / "ai4i2020" / "ai4i2020.csv"
MODS = {"thermal": list(THERMAL), "mechanical": list(MECHANICAL)}


def build_sim_bundle(root: Path, equipment_id: str, power: str, version: str, *, classifier: bool = True,
                     power_range_kw: tuple[float, float] = (0.0, 100.0), default_power: bool = False,
                     seed: int = 1, epochs: int = 8) -> Path:
    """A tiny real bundle (few epochs) trained on the simulator."""
    cols, labels = simulate_dataset(800, 60, spec=MachineSpec.for_power(power), seed=seed)
    spec = BuildSpec(equipment_id=equipment_id, power=power, model_version=version, power_range_kw=power_range_kw,
                     default_power=default_power, power_source=TORQUE_SPEED, modalities=MODS,
                     classifier=classifier, seed=seed, epochs=epochs)
    path, _ = build_bundle(spec, cols, labels, root, data="simulator:test", progress=lambda _m: None)
    return path


@pytest.fixture(scope="session")
def demo_root() -> Path:
    return DEMO_ROOT


@pytest.fixture()
def root_copy(tmp_path: Path) -> Path:
    """A private, mutable copy of the shipped demo bundles."""
    dst = tmp_path / "root"
    shutil.copytree(DEMO_ROOT, dst)
    return dst
