"""The demo fleet shipped in ``serve_ml/demo_bundles/``: 3 equipment ids x 2 power classes.

* ``mill-01``  : trained on AI4I 2020 (when the CSV is at hand), with a classifier;
* ``press-02`` : trained on the simulator, with a classifier naming the fault;
* ``pump-03``  : trained on the simulator, gate-only (no ``xgb.json``), and it
  declares a default power class.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from serve_ml.bundles.builder import BuildSpec, Progress, build_bundle
from serve_ml.bundles.catalog import RPM_NM_TO_KW
from serve_ml.bundles.datasets import file_sha256, read_training_csv
from serve_ml.bundles.manifest import PowerFromTorqueSpeed
from serve_ml.bundles.progress import ProgressPrinter
from serve_ml.bundles.simulation import MECHANICAL, THERMAL, MachineSpec, simulate_dataset

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
    return specs


def training_data(source: str, spec: BuildSpec, csv: Path | None) -> tuple[dict, np.ndarray, str, str | None]:
    """Columns, labels and a provenance description for one demo spec."""
    if source == "ai4i" and csv is not None and csv.is_file():
        cols, labels = read_training_csv(csv)
        kw = cols["torque_nm"] * cols["speed_rpm"] * RPM_NM_TO_KW
        lo, hi = spec.power_range_kw
        sel = (kw >= lo) & (kw < hi)
        return ({k: v[sel] for k, v in cols.items()}, labels[sel],
                f"{csv.name} (AI4I 2020, UCI, CC BY 4.0; rows with power in [{lo}, {hi}) kW)", file_sha256(csv))
    machine = MachineSpec.for_power(spec.power)
    cols, labels = simulate_dataset(4000, 300, spec=machine, seed=spec.seed + zlib.crc32(spec.equipment_id.encode()) % 1000)
    return cols, labels, f"simulator:{spec.power}:seed={spec.seed}", None


def build_demo(root: Path, *, csv: Path | None = AI4I_CSV, version: str = "1.0.0",
               progress: Progress | None = None) -> list[Path]:
    progress = progress or ProgressPrinter()
    built = []
    for spec, source in demo_specs(version):
        if source == "ai4i" and (csv is None or not csv.is_file()):
            progress(f"AI4I CSV not found at {csv}; training {spec.equipment_id} on the simulator instead")
        cols, labels, data, sha = training_data(source, spec, csv)
        if source == "ai4i" and sha is None:
            cols = {k: v for k, v in cols.items() if k in set(THERMAL) | {"speed_rpm", "torque_nm", "tool_wear_min"}}
        path, _ = build_bundle(spec, cols, labels, root, data=data, data_sha256=sha, progress=progress)
        built.append(path)
    return built
