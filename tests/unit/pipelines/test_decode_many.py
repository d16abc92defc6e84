"""``decode_many`` must give every message exactly what ``decode`` gives it: the same
reading, or a rejection with the same reason, whatever else is in the batch."""

from __future__ import annotations

import datetime as dt
import json

import orjson
from hypothesis import given
from hypothesis import strategies as st

from serve_ml.pipelines.decode import Rejected, decode, features_as_sent
from serve_ml.pipelines.decode_many import _parse, decode_many
from serve_ml.pipelines.simulator import Machine, ReadingSource
from tests.strategies import FUZZ, MAX_BYTES, NOW, documents, hostile_fragments

KW = {"max_bytes": MAX_BYTES, "now": NOW, "max_age_s": 86400.0, "max_future_s": 3600.0}
DEFAULT_TS = NOW - dt.timedelta(seconds=5)

# Messages the fast path should take: timestamps inside the window in the forms
# producers write, features as floats or integers.
in_window = st.integers(-86_000, 3_500).map(lambda s: NOW + dt.timedelta(seconds=s, microseconds=s * 7))
good_ts = st.one_of(
    in_window.map(lambda d: d.isoformat()), in_window.map(lambda d: d.isoformat().replace("+00:00", "Z")),
    in_window.map(lambda d: d.replace(tzinfo=None).isoformat()),
    in_window.map(lambda d: d.astimezone(dt.timezone(dt.timedelta(hours=-5))).isoformat()),
    in_window.map(lambda d: d.timestamp()), st.none())
good_docs = st.fixed_dictionaries(
    {"equipment_id": st.sampled_from(["press-02", "pump-03", "ü" * 128]),
     "features": st.dictionaries(st.text(min_size=1, max_size=12),
                                 st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                                           st.integers(-(2**60), 2**60)), min_size=1, max_size=8)},
    optional={"ts": good_ts, "power": st.sampled_from(["7.5kW", "5.5kW"]), "model_version": st.just("1.0.0")})
raw_messages = st.one_of(
    good_docs.map(orjson.dumps), good_docs.map(orjson.dumps), documents.map(lambda d: json.dumps(d).encode()),
    st.tuples(good_docs.map(orjson.dumps), hostile_fragments, st.integers(0)).map(
        lambda t: t[0][:t[2] % (len(t[0]) + 1)] + t[1] + t[0][t[2] % (len(t[0]) + 1):]),
    st.sampled_from([None, b"", b"  ", b"\n", b'{"features": {"a": 1.0},\n "equipment_id": "a"}', b"{}{}",
                     b'{"equipment_id": "a", "features": {"a": 1.0}} {"equipment_id": "b"}']),
    st.binary(max_size=64))


def one_by_one(raws: list[bytes | None]) -> list[object]:
    out: list[object] = []
    for raw in raws:
        try:
            out.append(decode(raw, default_ts=DEFAULT_TS, **KW))  # type: ignore[arg-type]
        except Rejected as exc:
            out.append(exc)
    return out


def comparable(results: list[object]) -> list[object]:
    return [("rejected", str(r)) if isinstance(r, Rejected) else r for r in results]


@FUZZ
@given(st.lists(raw_messages, max_size=12))
def test_same_answers_as_decode_one_by_one(raws: list[bytes | None]) -> None:
    got = decode_many(raws, [DEFAULT_TS] * len(raws), **KW)
    assert comparable(got) == comparable(one_by_one(raws))
    for r in got:
        if not isinstance(r, Rejected):
            assert all(type(v) is float for v in r.reading.features.values())


def test_simulator_messages_take_the_fast_path_whole() -> None:
    src = ReadingSource(Machine("press-02", "7.5kW"), seed=1)
    raws = [src.next_payload() for _ in range(200)]
    msgs, features, sent = _parse(raws, MAX_BYTES)
    assert None not in msgs and None not in features
    assert sent == [orjson.dumps(orjson.loads(r)["features"]) for r in raws]  # the producer writes with orjson
    now = dt.datetime.now(dt.UTC)
    got = decode_many(raws, [None] * len(raws), max_bytes=MAX_BYTES, now=now, max_age_s=60, max_future_s=60)
    assert got == [decode(r, max_bytes=MAX_BYTES, now=now, max_age_s=60, max_future_s=60) for r in raws]


def test_one_bad_message_costs_only_itself() -> None:
    good = orjson.dumps({"equipment_id": "a", "ts": NOW.isoformat(), "features": {"x": 1.5}})
    raws = [good, b'{"equipment_id": "a", "ts": 1795435200, "features": {"x": true}}', good, None]
    got = decode_many(raws, [None] * 4, **KW)
    assert [type(r).__name__ for r in got] == ["StreamReading", "Rejected", "StreamReading", "Rejected"]
    assert str(got[1]) == "features.x: expected a number" and str(got[3]) == "empty message"
    msgs, features, _ = _parse(raws, MAX_BYTES)
    assert msgs[1] is not None and features[1] is None  # the message parses; its features do not
    assert msgs[2] is not None and features[2] is not None  # the good ones around it still took the fast path


def test_features_are_kept_as_the_producer_wrote_them() -> None:
    written = b'{"equipment_id": "a", "ts": "%s", "features": { "x": 1, "y" :2.50 }}' % NOW.isoformat().encode()
    fast, = decode_many([written], [None], **KW)
    assert fast == decode(written, **KW)  # type: ignore[arg-type]
    assert fast.features_json == b'{ "x": 1, "y" :2.50 }' and fast.reading.features == {"x": 1.0, "y": 2.5}


def test_features_as_sent_falls_back_to_orjson_when_the_bytes_do_not_hold_the_features() -> None:
    written = b'{"features": {"x": 1.0}}'
    assert features_as_sent(written, {"x": 1.0}) == b'{"x": 1.0}'
    assert features_as_sent(written, {"x": 2.0}) == b'{"x":2.0}'
    assert features_as_sent(b'{"features": 1}', {"x": 2.0}) == b'{"x":2.0}'
