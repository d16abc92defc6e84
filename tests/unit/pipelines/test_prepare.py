"""``prepare_batch``: the records a chunk accepts become rows with where they came
from, whichever way the chunk is taken (all of it read at once, or record by record
when one of them is refused); the refused ones come back with their reasons."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from serve_ml.bundles.catalog import Catalog
from serve_ml.core.settings import Settings
from serve_ml.pipelines.prepare import PREPARE_SLICE, Prepared, prepare_batch
from serve_ml.pipelines.simulator import Machine, ReadingSource
from tests.pgcopy_reader import read_rows
from tests.stored_rows import R_KINDS

NOW_MS = int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def record(offset: int, value: bytes | None, timestamp_ms: int = NOW_MS) -> ConsumerRecord:
    return ConsumerRecord("features", offset % 4, offset, timestamp_ms, 0, None, value, None, 0, 0, ())


def prepare(demo_root: Path, records: list[ConsumerRecord]) -> Prepared:
    return asyncio.run(prepare_batch(records, {}, 0, Catalog.scan(demo_root), Settings(root=demo_root)))


def stored(p: Prepared) -> dict[int, tuple]:
    """The readings rows by source offset."""
    return {row[7]: row for row in read_rows(p.rows.copy_readings(), R_KINDS)}


@pytest.fixture(scope="module")
def payloads() -> list[bytes]:
    src = ReadingSource(Machine("press-02", "7.5kW"), seed=4)
    return [src.next_payload() for _ in range(PREPARE_SLICE + 20)]  # two chunks


def test_a_chunk_of_good_records_is_stored_whole(demo_root: Path, payloads: list[bytes]) -> None:
    p = prepare(demo_root, [record(i, v) for i, v in enumerate(payloads)])
    rows = stored(p)
    assert not p.dead and len(p.rows) == len(rows) == len(payloads) == len(p.records)
    for i, v in enumerate(payloads):
        doc = orjson.loads(v)
        assert rows[i][6] == i % 4 and rows[i][5] == "kafka"  # partition, source
        assert rows[i][4] == orjson.dumps(doc["features"]).decode()  # the features as the producer wrote them
        assert rows[i][0] == dt.datetime.fromisoformat(doc["ts"])


def test_a_refused_record_costs_only_itself(demo_root: Path, payloads: list[bytes]) -> None:
    no_ts = orjson.loads(payloads[3])
    del no_ts["ts"]
    records = [record(i, v) for i, v in enumerate(payloads[:6])]
    records[1] = record(1, b'{"equipment_id": "press-02", "features": {"x": true}}')
    records[2] = record(2, None)
    records[3] = record(3, orjson.dumps(no_ts), timestamp_ms=NOW_MS - 7_000)  # takes its record's time
    p = prepare(demo_root, records)
    assert [(r.offset, reason) for r, reason in p.dead] == [(1, "features.x: expected a number"),
                                                           (2, "empty message")]
    rows = stored(p)
    assert sorted(rows) == [0, 3, 4, 5]
    assert rows[3][0] == dt.datetime.fromtimestamp((NOW_MS - 7_000) / 1000, dt.UTC)
    assert rows[3][4] == orjson.dumps(no_ts["features"]).decode()
    assert rows[4][0] == dt.datetime.fromisoformat(orjson.loads(payloads[4])["ts"])
