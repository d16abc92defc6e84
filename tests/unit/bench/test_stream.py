"""The stream bench's machines load every partition of the features topic equally,
as the producer's own partitioner places them (readings are keyed by equipment)."""

from __future__ import annotations

from collections import Counter

from aiokafka.partitioner import DefaultPartitioner

from serve_ml.bench.stream import fleet_ids, machines
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
