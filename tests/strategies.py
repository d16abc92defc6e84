"""Hypothesis strategies for hostile stream payloads, shared by the decoder fuzz tests."""

from __future__ import annotations

import datetime as dt
import json

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from serve_ml.core.reading import MAX_NAME_CHARS as MAX_NAME

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
