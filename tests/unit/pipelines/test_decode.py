"""Stream decoding: every malformed shape becomes a Rejected with a reason, never a crash."""

from __future__ import annotations

import datetime as dt

import pytest

from serve_ml.pipelines.decode import Rejected, decode

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def dec(raw: bytes | None, **kw):
    return decode(raw, max_bytes=kw.pop("max_bytes", 4096), now=NOW, max_age_s=86400 * 30, max_future_s=3600,
                  default_ts=kw.pop("default_ts", None), **kw)


def test_good_message() -> None:
    r = dec(b'{"equipment_id": "press-02", "ts": "2026-11-23T11:59:00Z", "power": "7.5kW", '
            b'"features": {"air_temp_k": 300, "torque_nm": 40.5}}')
    assert r.reading.equipment_id == "press-02" and r.reading.power == "7.5kW"
    assert r.reading.features == {"air_temp_k": 300.0, "torque_nm": 40.5}
    assert r.ts == dt.datetime(2026, 11, 23, 11, 59, tzinfo=dt.UTC)


def test_epoch_and_default_ts() -> None:
    assert dec(b'{"equipment_id": "a", "ts": 1795435200, "features": {"x": 1}}').ts.year == 2026
    r = dec(b'{"equipment_id": "a", "features": {"x": 1}}', default_ts=NOW)
    assert r.ts == NOW


@pytest.mark.parametrize("raw, reason", [
    (None, "empty message"),
    (b"{not json", "not valid JSON"),
    # Not JSON numbers, but named as the HTTP API names them.
    (b'{"equipment_id": "a", "ts": "2026-11-23T11:00:00Z", "features": {"x": NaN}}', "features.x: not a finite number"),
    (b'{"equipment_id": "a", "ts": "2026-11-23T11:00:00Z", "features": {"x": -Infinity}}',
     "features.x: not a finite number"),
    (b'{"equipment_id": "a", "ts": "2026-11-23T11:00:00Z", "features": {"x": 1e400}}', "features.x: not a finite number"),
    (b'{"equipment_id": "a", "ts": "2026-11-23T11:00:00Z", "features": {"\\ud800": 1.0}}', "not valid JSON"),
    (b'{"equipment_id": "a", "ts": "2026-11-23T11:00:00Z", "features": {"": 1.0}}',
     "features: every name must have 1 to 128 characters"),
    (b"[1, 2]", "expected a JSON object"),
    (b"[" * 5000 + b"]" * 5000, "message is 10000 bytes"),
    (b'{"equipment_id": "a", "ts": "2026-11-23T11:00:00Z", "features": {"x": "1"}}', "features.x: expected a number"),
    (b'{"equipment_id": "a", "ts": "2026-11-23T11:00:00Z", "features": {"x": true}}', "features.x: expected a number"),
    (b'{"equipment_id": "a", "ts": "2026-11-23T11:00:00Z", "features": {}}', "features: expected a non-empty"),
    (b'{"equipment_id": 7, "ts": "2026-11-23T11:00:00Z", "features": {"x": 1}}', "equipment_id: expected"),
    (b'{"equipment_id": "a", "ts": "yesterday", "features": {"x": 1}}', "ts: not an ISO-8601"),
    (b'{"equipment_id": "a", "ts": "1999-01-01T00:00:00Z", "features": {"x": 1}}', "outside the accepted window"),
    (b'{"equipment_id": "a", "ts": 1e300, "features": {"x": 1}}', "ts: epoch seconds out of range"),
    (b'{"equipment_id": "a", "features": {"x": 1}}', "ts: missing"),
    (b'{"equipment_id": "a", "ts": 1795435200, "features": {"x": 1}, "evil": 1}', "unknown fields: evil"),
])
def test_rejections_name_the_problem(raw: bytes | None, reason: str) -> None:
    with pytest.raises(Rejected, match=reason.replace("[", r"\[")):
        dec(raw)


def test_deep_nesting_within_size_is_rejected() -> None:
    raw = b'{"equipment_id": "a", "ts": 1795435200, "features": {"x": ' + b"[" * 2000 + b"]" * 2000 + b"}}"
    with pytest.raises(Rejected):
        dec(raw, max_bytes=10_000)


def test_megabyte_string_is_rejected_by_size() -> None:
    raw = b'{"equipment_id": "' + b"a" * (1 << 20) + b'"}'
    with pytest.raises(Rejected, match="limit is 4096"):
        dec(raw)


def test_mqtt_equipment_from_topic() -> None:
    r = dec(b'{"ts": 1795435200, "features": {"x": 1}}', equipment_id="pump-03")
    assert r.reading.equipment_id == "pump-03"


def test_feature_checks_agree_on_the_fast_and_the_slow_path() -> None:
    """All-float features take a few C-level checks; anything else the per-feature loop."""
    base = b'{"equipment_id": "a", "ts": 1795435200, "features": '
    # Finite values whose sum overflows: the fast path's sum test fails, the loop accepts.
    assert dec(base + b'{"x": 1e308, "y": 1e308}}').reading.features == {"x": 1e308, "y": 1e308}
    # Integers are stored as floats, as before.
    feats = dec(base + b'{"x": 1, "y": 2.5}}').reading.features
    assert feats == {"x": 1.0, "y": 2.5} and all(type(v) is float for v in feats.values())
    with pytest.raises(Rejected, match="every name must have 1 to 128 characters"):
        dec(base + b'{"' + b"n" * 129 + b'": 1.5}}')
    with pytest.raises(Rejected, match="features.y: expected a number"):
        dec(base + b'{"x": 1.5, "y": null}}')
