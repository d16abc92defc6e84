"""Shared fixtures: small real bundles built by the project's own builder."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from serve_ml.bundles.builder import BuildSpec, build_bundle
from serve_ml.bundles.datasets import Ordering
from serve_ml.bundles.demo import RANGES, TORQUE_SPEED
from serve_ml.bundles.rul_training import RulSpec
from serve_ml.bundles.run_to_failure import simulate_fleet
from serve_ml.bundles.simulation import MECHANICAL, THERMAL, MachineSpec, simulate, simulate_dataset
from serve_ml.bundles.thresholds import Quantile
from serve_ml.core.settings import DEMO_BUNDLES, REPO_ROOT

pytest_plugins = ["tests.fixtures"]

# Property tests judge answers, not speed: on a 2-core machine shared with a Ray
# cluster, Hypothesis's timing checks (input generation, per-example deadline) fail
# for reasons that have nothing to do with the code under test.
settings.register_profile("serve-ml", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("serve-ml")

DEMO_ROOT = DEMO_BUNDLES
# The demo's equipment with dense gates only: what the shared cluster serves. The
# fourth, spindle-04 (an LSTM gate and a RUL head), is tested through `serve-ml up`
# (tests/e2e), where it is simulated as it wears out, and in process (tests/unit).
DENSE_FLEET = ("mill-01", "press-02", "pump-03")
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


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_reaches_children() -> Iterator[None]:
    """Tests stop servers they start as a user would, with Ctrl-C (SIGINT). A shell
    that starts a job in the background without job control (CI runners, `make test
    &`) starts it with SIGINT ignored, a disposition every child inherits: `serve
    run` then ignores the signal and the test waits out its kill timeout (90 s). With
    a handler installed here, children start with the default disposition again."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(scope="session")
def demo_root() -> Path:
    return DEMO_ROOT


@pytest.fixture(scope="session")
def cascade_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo fleet's press-02 and pump-03 shapes, rebuilt small, press-02 with a
    gate_then_classify cascade whose gates flag about half the normal rows, so both
    of the cascade's branches see many rows."""
    root = tmp_path_factory.mktemp("cascade")
    for power, rng in RANGES.items():
        cols, labels = simulate_dataset(600, 40, spec=MachineSpec.for_power(power), seed=3)
        for eq, classifier in (("press-02", True), ("pump-03", False)):
            spec = BuildSpec(equipment_id=eq, power=power, model_version="1.0.0", power_range_kw=rng,
                             default_power=eq == "pump-03" and power == "7.5kW", power_source=TORQUE_SPEED,
                             modalities=MODS, classifier=classifier, seed=3, epochs=4,
                             cascade="gate_then_classify" if classifier else "always",
                             threshold_rule=Quantile(q=0.6), classifier_rounds=20)
            build_bundle(spec, cols, labels, root, data="simulator:test", progress=lambda _m: None)
    return root


def build_rul_bundle(root: Path, equipment_id: str, power: str, version: str, *, alert_below: float | None = 60.0,
                     power_range_kw: tuple[float, float] = (0.0, 100.0), units: int = 12, seed: int = 4) -> Path:
    """A tiny real bundle with a RUL head, trained on simulated run-to-failure units.
    It reads the simulator's seven features (tool wear is added to the fleet's
    sensors), so the readings other tests send fit it."""
    fleet = simulate_fleet(units, seed=seed, min_life=80, max_life=160)
    cols = dict(fleet.sensors)
    cols["tool_wear_min"] = np.random.default_rng(seed).uniform(0, 200, len(fleet.unit))
    spec = BuildSpec(equipment_id=equipment_id, power=power, model_version=version, power_range_kw=power_range_kw,
                     power_source=TORQUE_SPEED, modalities=MODS, seed=seed, epochs=4, classifier_rounds=20,
                     split="unit", rul=RulSpec(alert_below=alert_below, rounds=60))
    ordering = Ordering(time=fleet.cycle.astype(float), unit=fleet.unit, time_column="cycle", unit_column="unit")
    path, _ = build_bundle(spec, cols, np.full(len(fleet.unit), "none"), root, data="simulator:run-to-failure",
                           progress=lambda _m: None, ordering=ordering)
    return path


def build_seq_bundle(root: Path, equipment_id: str, power: str, version: str, *, steps: int = 6,
                     power_range_kw: tuple[float, float] = (0.0, 100.0), seed: int = 5) -> Path:
    """A tiny real bundle with an LSTM gate over ``steps`` readings ("motor":
    vibration and current) beside a dense one ("thermal"), trained on one simulated
    machine's consecutive readings (file order is time order)."""
    cols = simulate(1500, spec=MachineSpec.for_power(power), rng=np.random.default_rng(seed))
    spec = BuildSpec(equipment_id=equipment_id, power=power, model_version=version, power_range_kw=power_range_kw,
                     modalities={"thermal": ["air_temp_k", "process_temp_k"],
                                 "motor": ["vibration_rms_mm_s", "current_a"]},
                     modality_kinds={"motor": "lstm_autoencoder"}, window_steps=steps, classifier=False, seed=seed,
                     epochs=4)
    path, _ = build_bundle(spec, cols, np.full(1500, "none"), root, data="simulator:series",
                           progress=lambda _m: None)
    return path


@pytest.fixture(scope="session")
def rul_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo fleet's shapes with press-02 rebuilt with a RUL head (alert below 60
    cycles) at both power classes; pump-03 as shipped."""
    root = tmp_path_factory.mktemp("rul")
    shutil.copytree(DEMO_ROOT / "pump-03", root / "pump-03")
    for power, rng in RANGES.items():
        build_rul_bundle(root, "press-02", power, "1.0.0", power_range_kw=rng)
    return root


@pytest.fixture(scope="session")
def ops_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gate-only bundles for the operations tests' own equipment (tests/opskit.py)."""
    from tests.opskit import OPS_EQUIPMENT

    root = tmp_path_factory.mktemp("ops") / "root"
    for eq in OPS_EQUIPMENT:
        build_sim_bundle(root, eq, "5.5kW", "v1", classifier=False, epochs=3)
    return root


def copy_without_evaluation(bundle: Path, root: Path) -> Path:
    """A copy of ``bundle`` under ``root`` as a builder before ``evaluation.json``
    wrote it: no held-out errors recorded (the manifest is not in its own checksums)."""
    dst = shutil.copytree(bundle, root.joinpath(*bundle.parts[-3:]))
    doc = json.loads((dst / "manifest.json").read_text())
    doc.pop("evaluation", None)
    doc["files"].pop("evaluation.json", None)
    (dst / "evaluation.json").unlink(missing_ok=True)
    (dst / "manifest.json").write_text(json.dumps(doc))
    return dst


@pytest.fixture()
def root_copy(tmp_path: Path) -> Path:
    """A private, mutable copy of the shipped demo bundles."""
    dst = tmp_path / "root"
    shutil.copytree(DEMO_ROOT, dst)
    return dst
