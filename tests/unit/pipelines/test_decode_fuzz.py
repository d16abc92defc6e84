"""Property-based fuzzing of the stream decoders (Kafka payloads and MQTT messages):
whatever the bytes, the decoder returns a clean reading or raises ``Rejected`` with a
reason. Any other exception would stop the stream, so it is a failure here."""

from __future__ import annotations

import math

import orjson
from hypothesis import given
from hypothesis import strategies as st

from serve_ml.core.reading import MAX_FEATURES
from serve_ml.core.reading import MAX_NAME_CHARS as MAX_NAME
from serve_ml.core.settings import Settings
from serve_ml.pipelines.decode import Rejected, decode
from serve_ml.pipelines.mqtt import to_kafka_payload
from tests.strategies import (
    FUZZ,
    MAX_BYTES,
    NOW,
    documents,
    encode,
    hostile_fragments,
)


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
