"""One table of readings, every path that takes a reading: each accepts and refuses
exactly the same ones, and names the same field with the same words
(``serve_ml.core.reading``).

The paths: the stream's per-message decoder and its batch decoder (msgspec), HTTP
predict, one reading of a bulk request, the same reading as one row of a columnar
request, and of a binary columnar request where the case can be said in binary
(names and finite/non-finite values; binary has no strings or nulls).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serve_ml.core import reading as contract
from serve_ml.core.settings import Settings
from serve_ml.deployments.local import create_local_app
from serve_ml.pipelines.decode import Rejected, decode
from serve_ml.pipelines.decode_many import decode_many

API = "/api/v1/serve-ml"
NOW = dt.datetime(2026, 11, 23, 11, 0, tzinfo=dt.UTC)
LONG = "n" * (contract.MAX_NAME_CHARS + 1)
NAN, INF = float("nan"), float("inf")


def _good(demo_root: Path) -> dict[str, Any]:
    rows = json.loads((demo_root / "press-02" / "7.5kW" / "1.0.0" / "warmup.json").read_text())["rows"]
    return {"equipment_id": "press-02", "power": "7.5kW", "features": dict(rows[0])}


def _with(**fields: Any) -> Any:
    def make(good: dict[str, Any]) -> dict[str, Any]:
        return {**good, **fields}
    return make


def _feature(name: str, value: Any, *, drop: str | None = None) -> Any:
    def make(good: dict[str, Any]) -> dict[str, Any]:
        feats = {k: v for k, v in good["features"].items() if k != drop}
        return {**good, "features": {**feats, name: value}}
    return make


# (id, reading from the good one, refusal: (field, text) or None for accepted)
CASES: list[tuple[str, Any, tuple[str, str] | None]] = [
    ("good", _with(), None),
    ("integer value", _feature("speed_rpm", 1500), None),
    ("negative zero", _feature("torque_nm", -0.0), None),
    ("explicit power and version", _with(power="7.5kW", model_version="1.0.0"), None),
    ("empty equipment_id", _with(equipment_id=""), ("equipment_id", contract.BAD_NAME)),
    ("long equipment_id", _with(equipment_id=LONG), ("equipment_id", contract.BAD_NAME)),
    ("numeric equipment_id", _with(equipment_id=7), ("equipment_id", contract.BAD_NAME)),
    ("empty power", _with(power=""), ("power", contract.BAD_NAME)),
    ("long model_version", _with(model_version=LONG), ("model_version", contract.BAD_NAME)),
    ("no features", _with(features={}), ("features", contract.BAD_FEATURES)),
    ("features not an object", _with(features=[1.0]), ("features", contract.BAD_FEATURES)),
    ("too many features", _with(features={f"f{i}": 1.0 for i in range(contract.MAX_FEATURES + 1)}),
     ("features", contract.TOO_MANY_FEATURES)),
    ("empty feature name", _feature("", 1.0), ("features", contract.BAD_FEATURE_NAME)),
    ("long feature name", _feature(LONG, 1.0), ("features", contract.BAD_FEATURE_NAME)),
    ("string value", _feature("air_temp_k", "300", drop="air_temp_k"), ("features.air_temp_k", contract.NOT_A_NUMBER)),
    ("boolean value", _feature("air_temp_k", True, drop="air_temp_k"), ("features.air_temp_k", contract.NOT_A_NUMBER)),
    ("null value", _feature("air_temp_k", None, drop="air_temp_k"), ("features.air_temp_k", contract.NOT_A_NUMBER)),
    ("NaN", _feature("air_temp_k", NAN, drop="air_temp_k"), ("features.air_temp_k", contract.NOT_FINITE)),
    ("infinity", _feature("torque_nm", -INF, drop="torque_nm"), ("features.torque_nm", contract.NOT_FINITE)),
    ("unknown field", _with(colour="red"), ("unknown fields", "colour")),
]
IDS = [c[0] for c in CASES]


def _json(doc: Any) -> bytes:
    # the standard library writes NaN and Infinity, as a client that sends them does
    return json.dumps(doc, allow_nan=True).encode()


def _assert_refused(message: str, refusal: tuple[str, str]) -> None:
    where, what = refusal
    assert what in message, message
    assert where.rsplit(".", 1)[-1] in message, message  # the field, or the feature, by name


def _assert_columnar_answer(r: Any, refusal: tuple[str, str] | None, features_field: str) -> None:
    """A columnar answer: every row scored, a non-finite row answered as a row error,
    anything else refused whole (the features named as the request names them)."""
    if refusal is None:
        assert r.status_code == 200 and not r.json()["errors"], r.text
    elif refusal[1] == contract.NOT_FINITE:
        assert r.status_code == 200 and r.json()["errors"]["0"]["status"] == 422, r.text
        _assert_refused(r.json()["errors"]["0"]["error"]["message"], refusal)
    else:
        assert r.status_code == 422, r.text
        _assert_refused(r.json()["message"], (refusal[0].replace("features", features_field, 1), refusal[1]))


@pytest.fixture(scope="module")
def client(demo_root: Path) -> TestClient:
    return TestClient(create_local_app(Settings(root=demo_root)))


@pytest.fixture(scope="module")
def good(demo_root: Path) -> dict[str, Any]:
    return _good(demo_root)


@pytest.mark.parametrize(("name", "make", "refusal"), CASES, ids=IDS)
def test_the_stream_decoders(good: dict[str, Any], name: str, make: Any, refusal: tuple[str, str] | None) -> None:
    raw = _json({**make(good), "ts": NOW.isoformat()})
    limits = {"max_bytes": 1 << 20, "now": NOW, "max_age_s": 3600.0, "max_future_s": 3600.0}
    (batch,) = decode_many([raw], [None], **limits)
    try:
        one = decode(raw, **limits)
    except Rejected as exc:
        assert refusal is not None, f"{name}: refused: {exc}"
        assert str(exc) == contract.problem(*refusal) or refusal[0] == "unknown fields", str(exc)
        _assert_refused(str(exc), refusal)
        assert isinstance(batch, Rejected) and str(batch) == str(exc)
        return
    assert refusal is None, f"{name}: accepted"
    assert batch == one


@pytest.mark.parametrize(("name", "make", "refusal"), CASES, ids=IDS)
def test_http_predict_and_bulk(client: TestClient, good: dict[str, Any], name: str, make: Any,
                               refusal: tuple[str, str] | None) -> None:
    doc = make(good)
    headers = {"content-type": "application/json"}
    one = client.post(f"{API}/predict", content=_json(doc), headers=headers)
    bulk = client.post(f"{API}/predict/bulk", content=_json({"readings": [doc]}), headers=headers)
    if refusal is None:
        assert one.status_code == 200, one.text
        assert bulk.status_code == 200 and bulk.json()["errors"] == 0, bulk.text
        return
    assert one.status_code == 422, one.text
    _assert_refused(one.json()["message"], refusal)
    # a refusal of the shape fails the request; a non-finite value fails its row only
    if bulk.status_code == 200:
        assert refusal[1] == contract.NOT_FINITE
        item = bulk.json()["results"][0]
        assert item["status"] == 422, item
        _assert_refused(item["error"]["message"], refusal)
    else:
        assert bulk.status_code == 422, bulk.text
        assert "readings[0]." in bulk.json()["message"]
        _assert_refused(bulk.json()["message"], refusal)


@pytest.mark.parametrize(("name", "make", "refusal"), CASES, ids=IDS)
def test_http_columns(client: TestClient, good: dict[str, Any], name: str, make: Any,
                      refusal: tuple[str, str] | None) -> None:
    doc = make(good)
    feats = doc.pop("features")
    if not isinstance(feats, dict):
        pytest.skip("columns hold one array per feature: a non-object has no columnar form")
    r = client.post(f"{API}/predict/columns", content=_json({**doc, "columns": {k: [v] for k, v in feats.items()}}),
                    headers={"content-type": "application/json"})
    _assert_columnar_answer(r, refusal, "columns")


@pytest.mark.parametrize(("name", "make", "refusal"), CASES, ids=IDS)
def test_http_binary_columns(client: TestClient, good: dict[str, Any], name: str, make: Any,
                             refusal: tuple[str, str] | None) -> None:
    doc = make(good)
    feats = doc.get("features")
    names_ok = all(isinstance(v, str) for k, v in doc.items() if k in contract.NAME_FIELDS)
    if not isinstance(feats, dict) or not feats or not names_ok or set(doc) - {"features", *contract.NAME_FIELDS} \
            or not all(type(v) in (int, float) for v in feats.values()):
        pytest.skip("binary columns carry only numbers, under names given in the query")
    params = {k: v for k, v in doc.items() if k != "features"} | {"features": ",".join(feats)}
    body = struct.pack(f"<{len(feats)}d", *(float(v) for v in feats.values()))
    r = client.post(f"{API}/predict/columns/binary", params=params, content=body,
                    headers={"content-type": "application/octet-stream"})
    _assert_columnar_answer(r, refusal, "features")


def test_the_table_covers_every_rule() -> None:
    said = {refusal[1] for _n, _m, refusal in CASES if refusal}
    assert {contract.BAD_NAME, contract.BAD_FEATURES, contract.TOO_MANY_FEATURES, contract.BAD_FEATURE_NAME,
            contract.NOT_A_NUMBER, contract.NOT_FINITE} <= said
    assert any(refusal is None for _n, _m, refusal in CASES)
    assert math.isnan(NAN)
