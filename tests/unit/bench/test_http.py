"""The bench's Serve floor answers what the real binary endpoint answers, so the floor
it measures carries the same bytes back; and its ceiling is the two costs in sequence."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from serve_ml.bench.floor import ceiling
from serve_ml.bench.http import BULK_ROWS, column_bodies, real_answer
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.columns import score_columns


def test_floor_answer_is_the_real_answer(demo_root: Path) -> None:
    _, binary, query, arrays = column_bodies(demo_root)
    answer = orjson.loads(real_answer(demo_root, binary[0], query))
    direct = score_columns(Catalog.scan(demo_root), "press-02", "7.5kW", None, arrays, BULK_ROWS, enable_xgb=False)
    assert answer["rows"] == BULK_ROWS and answer["equipment_id"] == "press-02"
    assert answer["anomaly"] == [bool(a) for a in direct["anomaly"]]
    assert answer["score"] == pytest.approx([float(s) for s in direct["score"]])
    assert "latency_ms" in answer


def test_ceiling_is_both_costs_in_sequence() -> None:
    # 1,000 rows: 0.5 ms of Serve plus 0.25 ms of model -> 0.75 ms per request
    assert ceiling(2_000_000, 4_000_000) == pytest.approx(1000 / 0.75e-3)
    assert ceiling(1e12, 4_000_000) == pytest.approx(4_000_000, rel=1e-5)
