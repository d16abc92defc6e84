"""The demo fleet shipped in ``serve_ml/demo_bundles/``: 3 equipment ids x 2 power classes.

* ``mill-01``  : trained on AI4I 2020 (when the CSV is at hand), with a classifier;
* ``press-02`` : trained on the simulator, with a classifier naming the fault;
* ``pump-03``  : trained on the simulator, gate-only (no ``xgb.json``), and it
  declares a default power class;
* ``spindle-04``: one power class, trained on simulated run-to-failure units read
  several times a cycle (what ``serve-ml up``'s ``run_to_failure`` machine sends):
  a dense thermal gate over a derived temperature rise, an LSTM gate over 30-reading
  windows of vibration and current, and a RUL head that alerts below 40 cycles.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serve_ml.bundles.builder import BuildSpec, Progress, build_bundle
from serve_ml.bundles.catalog import RPM_NM_TO_KW
from serve_ml.bundles.datasets import Ordering, file_sha256, read_training_csv
from serve_ml.bundles.derived import DerivedFeature
from serve_ml.bundles.manifest import PowerFromTorqueSpeed
from serve_ml.bundles.progress import ProgressPrinter
from serve_ml.bundles.rul_training import RulSpec
from serve_ml.bundles.run_to_failure import (
    LIVE_LIFE_CYCLES,
    LIVE_READINGS_PER_CYCLE,
    Fleet,
    expand_cycles,
    simulate_fleet,
)
from serve_ml.bundles.simulation import LIVE_WALK_READINGS, MECHANICAL, THERMAL, MachineSpec, simulate_dataset

AI4I_CSV = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "ai4i2020" / "ai4i2020.csv"
# Readings below 5.5 kW belong to the 5.5 kW class (operating point ~4.7 kW), the
# rest to 7.5 kW (operating point ~6.4 kW).
RANGES = {"5.5kW": (0.0, 5.5), "7.5kW": (5.5, 100.0)}
TORQUE_SPEED = PowerFromTorqueSpeed(torque_feature="torque_nm", speed_feature="speed_rpm")


def demo_specs(version: str = "1.0.0", seed: int = 7) -> list[tuple[BuildSpec, str]]:
    specs = []
    for power, rng in RANGES.items():
        specs.append((BuildSpec(equipment_id="mill-01", power=power, model_version=version, power_range_kw=rng,
                                default_power=power == "7.5kW", power_source=TORQUE_SPEED, seed=seed,
                                modalities={"thermal": ["air_temp_k", "process_temp_k"],
                                            "mechanical": ["speed_rpm", "torque_nm", "tool_wear_min"]}),
                      "ai4i"))
        for eq, clf in (("press-02", True), ("pump-03", False)):
            specs.append((BuildSpec(equipment_id=eq, power=power, model_version=version, power_range_kw=rng,
                                    default_power=(eq == "pump-03" and power == "7.5kW"),
                                    power_source=TORQUE_SPEED, classifier=clf, seed=seed,
                                    modalities={"thermal": list(THERMAL), "mechanical": list(MECHANICAL)},
                                    hidden={"mechanical": [12, 3]}),
                          "sim"))
    specs.append((BuildSpec(
        equipment_id="spindle-04", power="7.5kW", model_version=version, power_range_kw=(0.0, 100.0),
        default_power=True, power_source=TORQUE_SPEED, classifier=False, seed=seed, split="unit", epochs=12,
        derived=[DerivedFeature(name="delta_t_k", op="difference", inputs=["process_temp_k", "air_temp_k"])],
        modalities={"thermal": ["air_temp_k", "delta_t_k"], "motor": ["vibration_rms_mm_s", "current_a"]},
        modality_kinds={"motor": "lstm_autoencoder"}, window_steps=30,
        rul=RulSpec(alert_below=40.0)), "run-to-failure"))
    return specs


RUN_TO_FAILURE_UNITS = 30


@dataclass(frozen=True)
class TrainingData:
    columns: dict[str, np.ndarray]
    labels: np.ndarray
    data: str  # the provenance description
    sha256: str | None = None  # of the file read, if any
    ordering: Ordering | None = None  # units and cycles, for run-to-failure data


def training_data(source: str, spec: BuildSpec, csv: Path | None) -> TrainingData:
    """What one demo spec is trained on."""
    if source == "run-to-failure":
        fleet = run_to_failure_fleet(spec.seed)
        return TrainingData(dict(fleet.sensors), np.full(len(fleet.unit), "none"),
                            f"simulator:run-to-failure:units={RUN_TO_FAILURE_UNITS}:"
                            f"readings_per_cycle={LIVE_READINGS_PER_CYCLE}:seed={spec.seed}",
                            ordering=Ordering(time=fleet.cycle.astype(float), unit=fleet.unit, time_column="cycle",
                                              unit_column="unit"))
    if source == "ai4i" and csv is not None and csv.is_file():
        cols, labels = read_training_csv(csv)
        kw = cols["torque_nm"] * cols["speed_rpm"] * RPM_NM_TO_KW
        lo, hi = spec.power_range_kw
        sel = (kw >= lo) & (kw < hi)
        return TrainingData({k: v[sel] for k, v in cols.items()}, labels[sel],
                            f"{csv.name} (AI4I 2020, UCI, CC BY 4.0; rows with power in [{lo}, {hi}) kW)",
                            file_sha256(csv))
    machine = MachineSpec.for_power(spec.power)
    cols, labels = simulate_dataset(4000, 300, spec=machine, seed=spec.seed + zlib.crc32(spec.equipment_id.encode()) % 1000,
                                    walk_readings=LIVE_WALK_READINGS)
    if source == "ai4i":  # no CSV: the simulator, limited to AI4I's signals
        cols = {k: v for k, v in cols.items() if k in set(THERMAL) | {"speed_rpm", "torque_nm", "tool_wear_min"}}
    return TrainingData(cols, labels, f"simulator:{spec.power}:seed={spec.seed}")


def build_demo(root: Path, *, csv: Path | None = AI4I_CSV, version: str = "1.0.0",
               progress: Progress | None = None) -> list[Path]:
    progress = progress or ProgressPrinter()
    built = []
    for spec, source in demo_specs(version):
        if source == "ai4i" and (csv is None or not csv.is_file()):
            progress(f"AI4I CSV not found at {csv}; training {spec.equipment_id} on the simulator instead")
        t = training_data(source, spec, csv)
        path, _ = build_bundle(spec, t.columns, t.labels, root, data=t.data, data_sha256=t.sha256,
                               progress=progress, ordering=t.ordering)
        built.append(path)
    return built


def run_to_failure_fleet(seed: int) -> Fleet:
    """The units the demo's RUL bundle learns from, as the live simulator sends them."""
    lo, hi = LIVE_LIFE_CYCLES
    fleet = simulate_fleet(RUN_TO_FAILURE_UNITS, seed=seed, min_life=lo, max_life=hi)
    return expand_cycles(fleet, LIVE_READINGS_PER_CYCLE, np.random.default_rng(seed))
