"""The machines of ``bench stream`` and the bundle root they are scored by.

Three fleets, each 4 machines' worth per partition of the features topic:

* ``dense``: the simulator-trained demo equipment (press-02 with its classifier,
  pump-03 gate-only), then generated copies of pump-03's gate-only bundle.
* ``cascade``: the same four, then copies of a bundle built for the run (about 4 s):
  a thermal gate over a derived temperature rise, a mechanical gate, and an XGBoost
  fault classifier behind the gates (``gate_then_classify``) over the mechanical
  sensors and two derived features (temperature rise, power); the classifier is
  enabled, and press-02's also runs behind its gates, as the builder chose.
* ``sequence``: spindle-04 (a dense gate, an LSTM gate over 30 readings, a RUL head)
  and copies of its bundle, every machine running units to failure.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Literal

from aiokafka.partitioner import murmur2

from serve_ml.bench.fleet import TEMPLATE, generate_fleet
from serve_ml.bundles.builder import BuildSpec, build_bundle
from serve_ml.bundles.demo import TORQUE_SPEED
from serve_ml.bundles.derived import DerivedFeature
from serve_ml.bundles.simulation import LIVE_WALK_READINGS, MECHANICAL, MachineSpec, simulate_dataset
from serve_ml.pipelines.simulator import Machine
from serve_ml.pipelines.stack import FEATURE_PARTITIONS

FleetKind = Literal["dense", "cascade", "sequence"]

DENSE_BASE = ("press-02", "pump-03", "press-02", "pump-03")
SEQUENCE_TEMPLATE = ("spindle-04", "7.5kW", "1.0.0")
SEQUENCE_BASE = ("spindle-04",)
CASCADE_TEMPLATE = ("cascade-template", "7.5kW", "1.0.0")


def machines(n: int, faulty: int = 0, *, kind: FleetKind = "dense") -> list[Machine]:
    """Up to 4 machines on the demo equipment (two ids, both power classes; the first
    ``faulty`` in an overstrain fault), then generated ones (see :func:`fleet_ids`).
    ``sequence``: spindle-04 and its copies, each running units to failure (RUL
    alerts open as each unit nears its end; ``faulty`` does not apply)."""
    if kind == "sequence":
        return [Machine(eq, SEQUENCE_TEMPLATE[1], "run_to_failure")
                for eq in [*SEQUENCE_BASE[:n], *fleet_ids(n, SEQUENCE_BASE)]]
    eqs = ("press-02", "pump-03")
    out = [Machine(eqs[i % 2], ("5.5kW", "7.5kW")[(i // 2) % 2], "overstrain" if i < faulty else "normal")
           for i in range(min(n, 4))]
    power = CASCADE_TEMPLATE[1] if kind == "cascade" else TEMPLATE[1]
    out += [Machine(eq, power, "normal") for eq in fleet_ids(n)]
    return out


def fleet_ids(n: int, base: tuple[str, ...] = DENSE_BASE) -> list[str]:
    """Ids for the ``n - len(base)`` generated machines, picked so that every partition
    of the features topic carries as many machines as any other. Readings are keyed by
    equipment and hashed as Kafka's default partitioner does: 16 ``fleet-NNNN``
    machines in a row landed 7/3/5/1 on the 4 partitions, and a consumer group is
    only as fast as its busiest member. A real fleet of hundreds evens out by itself."""
    def partition(eq: str) -> int:
        return (murmur2(eq.encode()) & 0x7FFFFFFF) % FEATURE_PARTITIONS

    load = [0] * FEATURE_PARTITIONS
    for eq in base[:n]:
        load[partition(eq)] += 1
    ids: list[str] = []
    for i in itertools.count():
        if len(ids) >= n - len(base):
            return ids
        eq = f"fleet-{i:04d}"
        if load[k := partition(eq)] == min(load):
            load[k] += 1
            ids.append(eq)
    raise AssertionError("unreachable")


def fleet_root(tmp: Path, n: int, source: Path, *, kind: FleetKind = "dense") -> Path:
    """The demo bundles plus the generated equipment of :func:`machines`: a fleet spread
    over every partition of the features topic (readings are keyed by equipment)."""
    root = tmp / "root"
    shutil.copytree(source, root)
    if kind == "sequence":
        generate_fleet(root, n - 1, source, ids=fleet_ids(n, SEQUENCE_BASE), template=SEQUENCE_TEMPLATE)
    elif kind == "cascade" and n > 4:
        templates = tmp / "templates"
        build_cascade_template(templates)
        generate_fleet(root, n - 4, templates, ids=fleet_ids(n), template=CASCADE_TEMPLATE)
    elif n > 4:
        generate_fleet(root, n - 4, source, ids=fleet_ids(n))
    return root


def build_cascade_template(root: Path, seed: int = 7) -> Path:
    """The cascade fleet's bundle, trained on the simulator's readings and faults."""
    eq, power, version = CASCADE_TEMPLATE
    spec = BuildSpec(
        equipment_id=eq, power=power, model_version=version, power_range_kw=(0.0, 100.0), default_power=True,
        power_source=TORQUE_SPEED, classifier=True, cascade="gate_then_classify", seed=seed,
        derived=[DerivedFeature(name="delta_t_k", op="difference", inputs=["process_temp_k", "air_temp_k"]),
                 DerivedFeature(name="power_w", op="power_w", inputs=["torque_nm", "speed_rpm"])],
        modalities={"thermal": ["air_temp_k", "delta_t_k"], "mechanical": list(MECHANICAL)},
        classifier_features=["delta_t_k", "power_w", *MECHANICAL], hidden={"mechanical": [12, 3]})
    # normal rows in walks as long as the live simulator's, so the gates know the
    # air temperatures live readings wander through
    cols, labels = simulate_dataset(4000, 320, spec=MachineSpec.for_power(power), seed=seed,
                                    walk_readings=LIVE_WALK_READINGS)
    path, _ = build_bundle(spec, cols, labels, root, data=f"simulator:{power}:seed={seed}", progress=lambda _: None)
    return path
