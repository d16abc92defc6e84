"""The row bulk answer built from fragments is byte for byte the answer built from
one dict per reading, for every shape a group can take."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from serve_ml.bundles.batch import Reading, score_groups, score_readings
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.rowjson import encode_items
from serve_ml.bundles.simulation import THERMAL
from serve_ml.core.errors import ServeMLError
from tests.samples import mixed_readings


def result_items(results: list) -> tuple[int, list]:
    """The reference: one dict per reading (``score_readings``), errors as the bulk
    endpoint's ``{"status", "error"}`` items."""
    items = [{"status": r.status_code, "error": r.to_dict()} if isinstance(r, ServeMLError) else r for r in results]
    return sum(isinstance(r, ServeMLError) for r in results), items


@pytest.fixture(scope="module", params=["demo", "cascade", "rul"])
def cat(request: pytest.FixtureRequest, demo_root: Path) -> Catalog:
    """The shipped fleet, one whose press-02 runs its classifier behind the gate, and
    one whose press-02 has a RUL head."""
    return Catalog.scan(demo_root if request.param == "demo" else request.getfixturevalue(f"{request.param}_root"))


@pytest.mark.parametrize("xgb", [False, True])
@pytest.mark.parametrize("seed", [1, 2])
def test_fragments_give_the_bytes_of_the_dicts(cat: Catalog, xgb: bool, seed: int) -> None:
    readings = mixed_readings(150, seed)
    errors, items = result_items(score_readings(cat, readings, enable_xgb=xgb))
    got_errors, got = encode_items(len(readings), score_groups(cat, readings, enable_xgb=xgb))
    assert got == orjson.dumps(items)
    assert got_errors == errors > 0
    assert len(orjson.loads(got)) == len(readings)


def test_one_reading_and_one_failed_group(cat: Catalog) -> None:
    r = [Reading("press-02", {k: 1.0 for k in THERMAL}, "7.5kW")]
    assert encode_items(1, score_groups(cat, r, enable_xgb=True))[1] == orjson.dumps(
        result_items(score_readings(cat, r, enable_xgb=True))[1])
    bad = [Reading("nowhere", {"x": 1.0})] * 3
    errors, body = encode_items(3, score_groups(cat, bad, enable_xgb=False))
    assert errors == 3 and [i["status"] for i in orjson.loads(body)] == [404] * 3
