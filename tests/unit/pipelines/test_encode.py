"""The stream's columnar row encoder stores exactly what the verdict dicts of
``score_readings`` (the HTTP answer) say, row for row: mixed power classes, a
modality absent, non-finite inputs, a failed group, classifier on and off."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import orjson
import pytest

from serve_ml.bundles.batch import score_readings
from serve_ml.bundles.catalog import Catalog
from serve_ml.core.errors import FeatureError
from serve_ml.pipelines.encode import Origin, encode_scored
from serve_ml.pipelines.verdicts import all_verdicts
from tests.pgcopy_reader import read_rows
from tests.stored_rows import P_KINDS, R_KINDS, T0, readings, rows_from_verdicts

JSON_COLS = (4,)  # readings.features
P_JSON_COLS = (7, 9)  # predictions.modalities, predictions.fault_probabilities


@pytest.fixture(scope="module", params=["demo", "cascade", "rul"])
def cat(request: pytest.FixtureRequest, demo_root: Path) -> Catalog:
    """The shipped fleet, one whose press-02 runs its classifier behind the gate, and
    one whose press-02 has a RUL head."""
    return Catalog.scan(demo_root if request.param == "demo" else request.getfixturevalue(f"{request.param}_root"))


def key_of(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def decoded(row: tuple, json_cols: tuple[int, ...]) -> tuple:
    return tuple(orjson.loads(v) if i in json_cols and v is not None else v for i, v in enumerate(row))


@pytest.mark.parametrize("xgb", [False, True])
def test_columnar_rows_equal_verdict_dicts(cat: Catalog, xgb: bool) -> None:
    rs = readings()
    # Mostly Kafka, some MQTT-like rows with no partition or offset: constant and per-row columns both.
    origins = [Origin(T0 + dt.timedelta(seconds=i, microseconds=i), r.features, "kafka" if i % 4 else "mqtt",
                      None if i % 3 == 0 else 0, None if i % 3 == 0 else i, f"id-{i}" if i % 5 == 0 else None)
               for i, r in enumerate(rs)]
    encoded, rejected = encode_scored(cat, rs, origins, enable_xgb=xgb)
    stored_readings = read_rows(encoded.copy_readings(), R_KINDS)
    stored_preds = read_rows(encoded.copy_predictions(), P_KINDS)

    results = score_readings(cat, rs, enable_xgb=xgb)
    want_readings, want_preds, want_verdicts = rows_from_verdicts(origins, results)

    assert dict(rejected) == {len(rs) - 2: results[-2].message, len(rs) - 1: results[-1].message}
    assert isinstance(results[-2], FeatureError)  # the non-finite row
    order = sorted(range(len(encoded)), key=lambda k: stored_readings[k][0])  # groups come out grouped
    assert len(encoded) == len(stored_readings) == len(stored_preds) == len(want_readings) == len(rs) - 2
    assert [decoded(stored_readings[k], JSON_COLS) for k in order] == [decoded(r, JSON_COLS)
                                                                        for r in want_readings]
    assert [decoded(stored_preds[k], P_JSON_COLS) for k in order] == [decoded(p, P_JSON_COLS)
                                                                       for p in want_preds]
    verdicts = all_verdicts(encoded.judged)
    assert [verdicts[k] for k in order] == want_verdicts
    assert any(v.anomaly for v in want_verdicts) and any(not v.anomaly for v in want_verdicts)
    assert any('"absent"' in p[7] for p in stored_preds)
    assert any('"missing":["current_a"]' in p[7] for p in stored_preds)
    assert any(p[9] is not None for p in stored_preds) is xgb
    press = [p for p in stored_preds if p[1] == "press-02"]
    has_rul = any(b.rul is not None for b in cat.bundles.values() if b.manifest.equipment_id == "press-02")
    assert any(p[13] is not None for p in press) is has_rul  # (thermal-only readings lack the head's inputs)
    if xgb and any(b.manifest.cascade == "gate_then_classify" for b in cat.bundles.values()):  # rows the gate passed: no label
        assert any(p[8] is None for p in press) and any(p[8] is not None for p in press)
    assert {p[3] for p in stored_preds} == {"5.5kW", "7.5kW"}


def test_features_are_stored_and_keyed_as_sent(demo_root: Path) -> None:
    rs = readings()[:6]
    sent = [b"{ " + b", ".join(b'"%s": %r' % (k.encode(), v) for k, v in r.features.items()) + b" }"
            if i % 2 else None for i, r in enumerate(rs)]
    origins = [Origin(T0 + dt.timedelta(seconds=i), r.features, "kafka", 0, i, None, s)
               for i, (r, s) in enumerate(zip(rs, sent, strict=True))]
    encoded, rejected = encode_scored(Catalog.scan(demo_root), rs, origins, enable_xgb=False)
    assert not rejected
    by_offset = {row[7]: row for row in read_rows(encoded.copy_readings(), R_KINDS)}
    for i, (r, s) in enumerate(zip(rs, sent, strict=True)):
        text, key = by_offset[i][4], by_offset[i][2]
        want = s if s is not None else orjson.dumps(r.features)  # written here when not given
        assert text == want.decode() and key == key_of(want)
        assert orjson.loads(text) == r.features


def test_probability_documents_are_what_orjson_writes_of_each_rows_dict() -> None:
    from serve_ml.pipelines.encode import _probability_documents

    rng = np.random.default_rng(1)
    probs = rng.dirichlet([1, 1, 1, 1], size=500)
    probs[3] = [1e-300, 5e-324, 0.1, 1.0]
    probs[4, 1] = np.nan  # written as null, as orjson writes a NaN float
    probs[5] = [1e20, 1e-7, 0.5, 123456789.0]
    classes = ["none", "twf", 'h"df', "ü"]
    assert _probability_documents(classes, probs) == [orjson.dumps(dict(zip(classes, row, strict=True)))
                                                      for row in probs.tolist()]
    assert _probability_documents(classes, probs[:0]) == []
