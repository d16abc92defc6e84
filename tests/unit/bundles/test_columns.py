"""Columnar bulk scoring agrees with the row path, row for row, whatever the power
classes, bad rows, classifier setting; and refuses malformed columns by name."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pytest

from serve_ml.bundles.batch import Reading, score_readings
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.columns import dumps, from_binary, score_columns, to_arrays
from serve_ml.core.errors import AmbiguousPower, FeatureError, PayloadTooLarge
from tests.samples import mixed_power_rows


@pytest.fixture(scope="module")
def cat(demo_root: Path) -> Catalog:
    return Catalog.scan(demo_root)


def as_columns(rows: list[dict[str, float]]) -> dict[str, np.ndarray]:
    return {f: np.array([r[f] for r in rows]) for f in rows[0]}


def assert_agree(col: dict, row_results: list, i: int) -> None:
    r = row_results[i]
    power = col["power"] if isinstance(col["power"], str) else col["power"][i]
    assert power == r["power"]
    assert bool(col["anomaly"][i]) == r["anomaly"]
    assert math.isclose(float(col["score"][i]), r["score"], rel_tol=1e-12)
    for name, m in r["modalities"].items():
        if m["status"] == "scored":
            assert math.isclose(float(col["modalities"][name]["error"][i]), m["error"], rel_tol=1e-12)


@pytest.mark.parametrize("power", ["7.5kW", None], ids=["given-power", "automatic-power"])
@pytest.mark.parametrize("xgb", [False, True], ids=["gate", "xgb"])
def test_columns_equal_rows(cat: Catalog, power: str | None, xgb: bool) -> None:
    rows = mixed_power_rows(200)
    if power:
        rows = [r for r in rows if r["torque_nm"] * r["speed_rpm"] * 2 * math.pi / 60_000 >= 5.5]
    col = score_columns(cat, "press-02", power, None, as_columns(rows), len(rows), enable_xgb=xgb)
    by_row = score_readings(cat, [Reading("press-02", r, power) for r in rows], enable_xgb=xgb)
    assert col["rows"] == len(rows) and not col["errors"]
    for i in range(len(rows)):
        assert_agree(col, by_row, i)
    if power is None:  # both power classes appear, each row labelled with the one that scored it
        assert set(col["power"]) == {"5.5kW", "7.5kW"}
    groups = col["classifier"] if isinstance(col["classifier"], list) else [col["classifier"]]
    assert all(g["status"] == ("ran" if xgb else "skipped") for g in groups)
    if xgb and power:
        labels = [r["classifier"]["label"] for r in by_row]
        assert col["classifier"]["label"] == labels
    decoded = orjson.loads(dumps(col))
    assert len(decoded["score"]) == len(rows) and len(decoded["anomaly"]) == len(rows)


def test_non_finite_rows_are_errors_and_others_scored(cat: Catalog) -> None:
    rows = mixed_power_rows(10)
    cols = as_columns(rows)
    cols["air_temp_k"][3] = np.nan
    col = score_columns(cat, "press-02", "7.5kW", None, cols, len(rows), enable_xgb=False)
    assert list(col["errors"]) == ["3"] and col["errors"]["3"]["error"]["detail"]["features"]["air_temp_k"]
    decoded = orjson.loads(dumps(col))
    assert decoded["score"][3] is None and decoded["anomaly"][3] is False
    assert all(s is not None for i, s in enumerate(decoded["score"]) if i != 3)


def test_single_modality_rows(cat: Catalog) -> None:
    rows = [{"air_temp_k": r["air_temp_k"], "process_temp_k": r["process_temp_k"]} for r in mixed_power_rows(6)]
    col = score_columns(cat, "press-02", "7.5kW", None, as_columns(rows), 6, enable_xgb=False)
    assert col["modalities"]["mechanical"]["status"] == "absent"
    by_row = score_readings(cat, [Reading("press-02", r, "7.5kW") for r in rows], enable_xgb=False)
    for i in range(6):
        assert_agree(col, by_row, i)


def test_request_level_errors(cat: Catalog) -> None:
    rows = mixed_power_rows(4)
    with pytest.raises(FeatureError, match="unknown feature"):
        score_columns(cat, "press-02", "7.5kW", None, {**as_columns(rows), "bogus": np.zeros(4)}, 4, enable_xgb=False)
    thermal = {"air_temp_k": np.full(4, 300.0), "process_temp_k": np.full(4, 310.0)}
    with pytest.raises(AmbiguousPower):  # no torque/speed to place the rows, press-02 has no default power
        score_columns(cat, "press-02", None, None, thermal, 4, enable_xgb=False)


@pytest.mark.parametrize("columns, needle", [
    ({"a": [1.0, 2.0], "b": [1.0]}, "differ in shape"),
    ({"a": [[1.0, 2.0], [3.0, 4.0]], "b": [1.0, 2.0]}, "differ in shape"),  # windows and values mixed
    ({"a": [True, False]}, "flat array of numbers"),
    ({"a": ["1", "2"]}, "flat array of numbers"),
    ({"a": [1.0, None]}, "flat array of numbers"),
    ({"a": [[1.0], [2.0, 3.0]]}, "every window of the same length"),  # ragged windows
    ({"a": [[[1.0]]]}, "flat array of numbers"),
    ({"a": []}, "at least one row"),
])
def test_to_arrays_names_the_problem(columns: dict, needle: str) -> None:
    with pytest.raises(FeatureError) as exc:
        to_arrays(columns, 100)
    assert needle in orjson.dumps(exc.value.to_dict()).decode()


def test_to_arrays_takes_windows_and_counts_their_values_against_the_limit() -> None:
    cols, n = to_arrays({"a": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], "b": [[0.0] * 3] * 2}, 6)
    assert n == 2 and cols["a"].shape == (2, 3)
    with pytest.raises(PayloadTooLarge, match="2 rows of 3 steps"):
        to_arrays({"a": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}, 5)


def test_to_arrays_row_limit() -> None:
    with pytest.raises(PayloadTooLarge, match="limit is 3"):
        to_arrays({"a": [1.0] * 4}, 3)
    arrays, n = to_arrays({"a": [1, 2.5], "b": [3, 4]}, 3)
    assert n == 2 and arrays["a"].dtype == np.float64


def test_binary_windows_are_rows_by_steps_per_feature() -> None:
    a = np.arange(12, dtype="<f8").reshape(2, 6)  # 2 rows x 6 steps
    b = -a
    cols, n = from_binary(np.stack([a, b]).tobytes(), "a,b", "float64", 100, steps=6)
    assert n == 2 and cols["a"].tolist() == a.tolist() and cols["b"].tolist() == b.tolist()
    with pytest.raises(FeatureError, match="rows of 2 x 5 float64 values"):
        from_binary(np.stack([a, b]).tobytes(), "a,b", "float64", 100, steps=5)
    with pytest.raises(PayloadTooLarge, match="2 rows of 6 steps"):
        from_binary(np.stack([a, b]).tobytes(), "a,b", "float64", 11, steps=6)
