"""The row bulk answer built from fragments is byte for byte the answer built from
one dict per reading, for every shape a group can take."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pytest

from serve_ml.bundles.batch import Reading, score_groups, score_readings
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.rowjson import encode_items
from serve_ml.bundles.simulation import MECHANICAL, THERMAL, MachineSpec, simulate
from serve_ml.core.errors import ServeMLError


def result_items(results: list) -> tuple[int, list]:
    """The reference: one dict per reading (``score_readings``), errors as the bulk
    endpoint's ``{"status", "error"}`` items."""
    items = [{"status": r.status_code, "error": r.to_dict()} if isinstance(r, ServeMLError) else r for r in results]
    return sum(isinstance(r, ServeMLError) for r in results), items


@pytest.fixture(scope="module")
def cat(demo_root: Path) -> Catalog:
    return Catalog.scan(demo_root)


def mixed_readings(n: int, seed: int) -> list[Reading]:
    """Several equipment and powers, full and single-modality readings, pinned and
    unknown versions, unknown equipment, non-finite values: every group shape."""
    rng = np.random.default_rng(seed)
    out = []
    for power in ("5.5kW", "7.5kW"):
        cols = simulate(n, spec=MachineSpec.for_power(power), profile="normal", rng=rng)
        for i in range(n):
            f = {k: float(v[i]) for k, v in cols.items()}
            kind = rng.integers(0, 10)
            if kind == 0:
                f = {k: f[k] for k in THERMAL}
            elif kind == 1:
                f = {k: f[k] for k in MECHANICAL}
            elif kind == 2:
                f[next(iter(f))] = math.nan
            elif kind == 3:
                f["torque_nm"] = math.inf
            eq = ("press-02", "pump-03", "no-such-machine")[int(rng.integers(0, 3)) if kind != 4 else 0]
            version = "9.9.9" if kind == 5 else None
            out.append(Reading(eq, f, None if kind == 6 else power, version))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


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
