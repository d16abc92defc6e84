"""Property-based fuzzing of the stream decoders (Kafka payloads and MQTT messages):
whatever the bytes, the decoder returns a clean reading or raises ``Rejected`` with a
reason. Any other exception would stop the stream, so it is a failure here."""

from __future__ import annotations

import datetime as dt
import json
import math

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve_ml.core.settings import Settings
from serve_ml.pipelines.decode import MAX_FEATURES, MAX_NAME, Rejected, decode
from serve_ml.pipelines.mqtt import to_kafka_payload

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
MAX_BYTES = 64 * 1024
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=80))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=20), inner, max_size=5)), max_leaves=30)
ts_values = st.one_of(
    st.datetimes(timezones=st.just(dt.UTC)).map(lambda d: d.isoformat()),
    st.floats(allow_nan=False), st.integers(), st.text(max_size=70), st.none(), st.booleans())
feature_values = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**70), 2**70),
                           st.text(max_size=10), st.booleans(), st.none(), st.lists(st.integers(), max_size=2))
documents = st.fixed_dictionaries({}, optional={
    "equipment_id": st.one_of(st.sampled_from(["press-02", "ghost", "", "x" * (MAX_NAME + 1)]), json_values),
    "ts": ts_values,
    "power": st.one_of(st.sampled_from(["7.5kW", "99kW"]), json_values),
    "model_version": st.one_of(st.sampled_from(["1.0.0"]), json_values),
    "features": st.one_of(st.dictionaries(st.text(max_size=MAX_NAME + 5), feature_values, max_size=8), json_values),
    "extra": json_values,
})


def encode(doc: dict) -> bytes:
    """The stdlib encoder: unlike orjson it writes integers beyond 64 bits and escapes
    lone surrogates, both of which a hostile producer can send."""
    return json.dumps(doc).encode()


# Text the JSON encoder cannot produce but an attacker can: non-finite literals, huge
# exponents and integers, deep nesting, invalid UTF-8, truncations.
hostile_fragments = st.sampled_from([
    b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e99999", b"9" * 400, b"[" * 2000, b"{\"a\":" * 600,
    b"\xff\xfe", b"\x00", b"\"\\ud800\"", b"true", b"{}", b"\"" + b"a" * 70_000 + b"\""])


def assert_clean_or_rejected(call) -> None:  # type: ignore[no-untyped-def]
    try:
        r = call()
    except Rejected as exc:
        assert str(exc), "a rejection must carry a reason"
        return
    feats = r.reading.features
    assert r.reading.equipment_id and len(r.reading.equipment_id) <= MAX_NAME
    assert 0 < len(feats) <= MAX_FEATURES and all(isinstance(v, float) and math.isfinite(v) for v in feats.values())
    assert r.ts.tzinfo is not None


def kafka(raw: bytes):  # type: ignore[no-untyped-def]
    return lambda: decode(raw, max_bytes=MAX_BYTES, now=NOW, max_age_s=86400 * 365, max_future_s=3600,
                          default_ts=None)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(raw: bytes) -> None:
    assert_clean_or_rejected(kafka(raw))


@FUZZ
@given(documents)
def test_structured_documents(doc: dict) -> None:
    assert_clean_or_rejected(kafka(encode(doc)))


@FUZZ
@given(documents, hostile_fragments, st.integers(min_value=0))
def test_hostile_text_spliced_into_documents(doc: dict, fragment: bytes, at: int) -> None:
    raw = encode(doc)
    cut = at % (len(raw) + 1)
    assert_clean_or_rejected(kafka(raw[:cut] + fragment + raw[cut:]))


def test_megabyte_message_is_rejected_by_size_before_parsing() -> None:
    raw = orjson.dumps({"equipment_id": "a", "ts": 1, "features": {"x": 1}, "pad": "z" * (1 << 20)})
    try:
        kafka(raw)()
    except Rejected as exc:
        assert f"the limit is {MAX_BYTES}" in str(exc)
    else:
        raise AssertionError("a 1 MiB message was accepted")


@FUZZ
@given(st.one_of(st.text(max_size=60), st.sampled_from(["serve-ml//features", "serve-ml/a/b/features"])),
       st.one_of(documents.map(encode), st.binary(max_size=512)))
def test_mqtt_topic_and_payload(topic: str, payload: bytes) -> None:
    s = Settings(max_message_bytes=MAX_BYTES)

    def call():  # type: ignore[no-untyped-def]
        eq, value = to_kafka_payload(topic, payload, s, NOW)
        # what the bridge forwards must decode cleanly on the Kafka side
        return kafka(value)()

    assert_clean_or_rejected(call)
