"""The stream bench's machines load every partition of the features topic equally,
as the producer's own partitioner places them (readings are keyed by equipment)."""

from __future__ import annotations

from collections import Counter

import orjson
from aiokafka.partitioner import DefaultPartitioner

from serve_ml.bench.stream_fleet import fleet_ids, machines
from serve_ml.pipelines.simulator import Machine
from serve_ml.pipelines.stack import FEATURE_PARTITIONS

PARTS = list(range(FEATURE_PARTITIONS))


def load(n: int) -> Counter[int]:
    place = DefaultPartitioner()
    return Counter(place(m.equipment_id.encode(), PARTS, PARTS) for m in machines(n))


def test_every_partition_carries_the_same_number_of_machines() -> None:
    assert load(16) == {p: 4 for p in PARTS}
    assert max(load(64).values()) - min(load(64).values()) == 0
    assert sum(load(10).values()) == 10 and max(load(10).values()) - min(load(10).values()) <= 1


def test_ids_are_new_and_distinct() -> None:
    assert fleet_ids(4) == [] and fleet_ids(2) == []
    ids = fleet_ids(64)
    assert len(ids) == len(set(ids)) == 60
    assert all(i.startswith("fleet-") for i in ids)


def test_the_sequence_fleet_is_spindle_04_and_copies_all_wearing_out(tmp_path) -> None:
    from serve_ml.bench.stream_fleet import SEQUENCE_TEMPLATE, fleet_root
    from serve_ml.bundles.catalog import Catalog
    from tests.conftest import DEMO_ROOT

    fleet = machines(16, kind="sequence")
    assert fleet[0].equipment_id == "spindle-04" and len({m.equipment_id for m in fleet}) == 16
    assert {m.profile for m in fleet} == {"run_to_failure"} and {m.power for m in fleet} == {SEQUENCE_TEMPLATE[1]}
    place = DefaultPartitioner()
    assert Counter(place(m.equipment_id.encode(), PARTS, PARTS) for m in fleet) == {p: 4 for p in PARTS}
    catalog = Catalog.scan(fleet_root(tmp_path, 16, DEMO_ROOT, kind="sequence"))
    for m in fleet:
        bundle = catalog.live_bundle(m.equipment_id, m.power)
        assert bundle.rul is not None and any(x.input == "windows" for x in bundle.modalities.values())


def test_the_paced_fleet_crosses_to_the_producer_process_intact() -> None:
    # The latency phase's producer is a spawned process: its machines go by pickle.
    import pickle

    fleet = machines(4, faulty=1) + machines(4, kind="sequence")
    assert pickle.loads(pickle.dumps(fleet)) == fleet
    assert any(m.profile != "normal" for m in machines(4, faulty=1))


def test_the_cascade_fleet_gates_and_classifies_on_derived_features(tmp_path) -> None:
    import numpy as np

    from serve_ml.bench.stream_fleet import CASCADE_TEMPLATE, fleet_root
    from serve_ml.bundles.batch import Reading, score_readings
    from serve_ml.bundles.catalog import Catalog
    from serve_ml.pipelines.simulator import ReadingSource
    from tests.conftest import DEMO_ROOT

    fleet = machines(16, kind="cascade")
    assert [m.equipment_id for m in fleet] == [m.equipment_id for m in machines(16)]  # same ids, same partitions
    catalog = Catalog.scan(fleet_root(tmp_path, 16, DEMO_ROOT, kind="cascade"))
    generated = [m for m in fleet if m.equipment_id.startswith("fleet-")]
    assert len(generated) == 12 and {m.power for m in generated} == {CASCADE_TEMPLATE[1]}
    for m in generated:
        manifest = catalog.live_bundle(m.equipment_id, m.power).manifest
        assert manifest.cascade == "gate_then_classify" and manifest.classifier is not None
        assert {d.name for d in manifest.derived} == {"delta_t_k", "power_w"}
    # Normal readings pass the gate unclassified; an overstrained machine's are classified.
    results = {}
    for profile in ("normal", "overstrain"):
        src = ReadingSource(Machine(generated[0].equipment_id, generated[0].power, profile), seed=3)
        readings = [Reading(generated[0].equipment_id, orjson.loads(src.next_payload())["features"])
                    for _ in range(300)]
        results[profile] = score_readings(catalog, readings, enable_xgb=True)
    labels = {p: np.array([r["classifier"].get("label") is not None for r in rs]) for p, rs in results.items()}
    assert labels["normal"].mean() < 0.1 and labels["overstrain"].mean() > 0.5, {p: v.mean() for p, v in labels.items()}
