"""The ingress's bulk fan-out: readings of equipment with a deployment go there, the
rest are scored in the ingress, and the merged answer is what one scorer gives for
the whole request, in input order, with no per-row Python work in the split or the
merge. The equipment "deployment" here is the real scoring service behind a
stand-in handle (the Serve hop itself is covered by the integration suite)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest

from serve_ml.bench.hotpath import PER_ROW_NOISE, trace_call
from serve_ml.bundles.batch import ReadingColumns
from serve_ml.deployments.ingress import Ingress
from serve_ml.deployments.wire import decode_readings
from serve_ml.scoring.service import ScoringService
from tests.samples import mixed_readings


class _Done:
    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self):  # type: ignore[no-untyped-def]
        return self.value
        yield  # pragma: no cover - makes this a generator


class _EquipmentHandle:
    """``score_wire.remote(payload)`` answered by a real service, as the replica does."""

    def __init__(self, service: ScoringService) -> None:
        self.calls: list[int] = []
        self.score_wire = SimpleNamespace(remote=self._score_wire)
        self.service = service

    def _score_wire(self, payload: bytes) -> _Done:
        readings = decode_readings(payload)
        self.calls.append(readings.n)
        return _Done(self.service.score_bulk(readings))


@pytest.fixture(scope="module")
def service(demo_root: Path) -> ScoringService:
    return ScoringService(demo_root, enable_xgb=True)


def fake_ingress(service: ScoringService) -> SimpleNamespace:
    fake = SimpleNamespace(service=service, handles={"press-02": _EquipmentHandle(service)},
                           args=SimpleNamespace(request_timeout_s=30.0, retry_after_s=1, equipment_deadline_s=5.0))
    cls = Ingress.func_or_class
    fake._call = lambda *a, **kw: cls._call(fake, *a, **kw)
    fake._score_part = lambda *a: cls._score_part(fake, *a)
    return fake


def bulk(fake: SimpleNamespace, readings: ReadingColumns) -> tuple[int, bytes]:
    return asyncio.run(Ingress.func_or_class.score_bulk(fake, readings))


def test_split_and_merge_answer_as_one_scorer(service: ScoringService) -> None:
    readings = ReadingColumns.of_readings(mixed_readings(120, 3))
    fake = fake_ingress(service)
    errors, body = bulk(fake, readings)
    want_errors, want = service.score_bulk(readings)
    assert (errors, orjson.loads(body)) == (want_errors, orjson.loads(want))
    eqs = np.array(readings.equipment_ids)
    assert fake.handles["press-02"].calls == [int(np.count_nonzero(eqs == "press-02"))]  # one call, its rows only


def test_split_and_merge_do_no_per_row_python_work(service: ScoringService) -> None:
    # Finite values only: a row that fails costs Python work for its own error item,
    # which is per error, not per row. Unknown equipment and versions stay in: they
    # fail a whole group at once.
    # The large request repeats the small one, so both have the same groups and only
    # the row count differs.
    finite = [r for r in mixed_readings(100, 4) if all(math.isfinite(v) for v in r.features.values())]

    def lines(copies: int) -> tuple[int, int]:
        readings = ReadingColumns.of_readings(finite * copies)
        fake = fake_ingress(service)
        bulk(fake, readings)  # warm
        assert fake.handles["press-02"].calls and len(set(readings.equipment_ids)) == 3
        # fewest of three: waiting on the worker thread adds a few lines at random
        return readings.n, min(trace_call(lambda: bulk(fake, readings)).lines for _ in range(3))

    (n_small, small), (n_large, large) = lines(1), lines(60)
    assert abs(large - small) / (n_large - n_small) < PER_ROW_NOISE
