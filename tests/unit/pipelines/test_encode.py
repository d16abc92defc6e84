"""The stream's columnar row encoder stores exactly what the dict path stores, row for
row: mixed power classes, a modality absent, non-finite inputs, classifier on/off."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pytest

from bundles.batch import Reading, score_groups, score_readings
from bundles.catalog import Catalog
from pipelines.encode import Origin, Rows, Scored, encode_rows
from serve_ml.errors import FeatureError, ServeMLError
from tests.unit.bundles.test_columns import mixed_power_rows

T0 = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
JSON_COLS = (3,)  # readings.features
P_JSON_COLS = (6, 8)  # predictions.modalities, predictions.fault_probabilities


@pytest.fixture(scope="module")
def cat(demo_root: Path) -> Catalog:
    return Catalog.scan(demo_root)


def readings() -> list[Reading]:
    rows = mixed_power_rows(40)
    out = [Reading("pump-03", r) for r in rows]  # power chosen per row; pump-03 has a default class
    out += [Reading("press-02", r, "7.5kW") for r in rows[:10]]  # press-02 has a classifier
    thermal_only = {k: v for k, v in rows[0].items() if k in ("air_temp_k", "process_temp_k")}
    out += [Reading("press-02", thermal_only, "5.5kW") for _ in range(3)]  # mechanical absent
    out.append(Reading("pump-03", {**rows[1], "torque_nm": float("nan")}, "5.5kW"))  # a bad row
    out.append(Reading("no-such-machine", rows[2]))  # a failed group
    return out


def decoded(row: tuple, json_cols: tuple[int, ...]) -> tuple:
    return tuple(orjson.loads(v) if i in json_cols and v is not None else v for i, v in enumerate(row))


@pytest.mark.parametrize("xgb", [False, True])
def test_columnar_rows_equal_dict_rows(cat: Catalog, xgb: bool) -> None:
    rs = readings()
    origins = [Origin(T0 + dt.timedelta(seconds=i), r.features, "kafka", 0, i) for i, r in enumerate(rs)]

    columnar, rejected, failed = Rows([], [], []), {}, {}
    for idx, scored in score_groups(cat, rs, enable_xgb=xgb):
        if isinstance(scored, ServeMLError):
            failed |= dict.fromkeys(idx, scored.message)
            continue
        for row, err in columnar.add_group(scored, [origins[i] for i in idx]):
            rejected[idx[row]] = err.message

    results = score_readings(cat, rs, enable_xgb=xgb)
    good = [Scored(o.ts, o.features, r, o.source, o.partition, o.offset)
            for o, r in zip(origins, results, strict=True) if not isinstance(r, ServeMLError)]
    expected = encode_rows(good)

    assert failed == {len(rs) - 1: results[-1].message}
    assert rejected == {len(rs) - 2: results[-2].message}
    assert isinstance(results[-2], FeatureError)
    order = sorted(range(len(columnar)), key=lambda k: columnar.readings[k][0])  # groups come out grouped
    assert len(columnar) == len(expected) == len(rs) - 2
    assert [decoded(columnar.readings[k], JSON_COLS) for k in order] == [decoded(r, JSON_COLS)
                                                                          for r in expected.readings]
    assert [decoded(columnar.predictions[k], P_JSON_COLS) for k in order] == [decoded(p, P_JSON_COLS)
                                                                               for p in expected.predictions]
    assert [columnar.verdicts[k] for k in order] == expected.verdicts
    assert any(v.anomaly for v in expected.verdicts) and any(not v.anomaly for v in expected.verdicts)
    assert any('"absent"' in p[6] for p in columnar.predictions)
    assert any(p[8] is not None for p in columnar.predictions) is xgb
    assert {p[2] for p in columnar.predictions} == {"5.5kW", "7.5kW"}
