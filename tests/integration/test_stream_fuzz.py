"""Hostile payloads through the real stream (Tansu, Mosquitto, the scorer actor and
the MQTT bridge): every one lands in the dead-letter topic with a reason, every good
reading around them is stored, and the stream keeps running."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import random
import time

import orjson
import pytest

from serve_ml.pipelines.deadletter import DLQ_MAX_VALUE_BYTES
from serve_ml.pipelines.stack import Stack
from tests.streamkit import consume_all, count, now, produce_raw, q, wait_count

pytestmark = pytest.mark.integration

FRAGMENTS = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"9" * 400, b"[" * 3000, b"{\"a\":" * 700, b"\xff\xfe",
             b"\x00", b"\"\\ud800\"", b"null", b"{}", b"[]"]


def hostile_payloads(rng: random.Random, t0: dt.datetime, n: int) -> list[bytes]:
    """Bytes a broken or malicious producer sends: junk, deep nesting, non-finite and
    huge numbers, wrong types, megabyte-scale strings, unknown equipment."""
    ts = t0.isoformat()
    docs: list[bytes] = [
        b"[" * 50_000 + b"]" * 50_000,
        orjson.dumps({"equipment_id": "press-02", "ts": ts, "features": {"x": 1.0}, "pad": "z" * 900_000}),
        b'{"equipment_id": "press-02", "ts": "' + ts.encode() + b'", "features": {"air_temp_k": 1e400}}',
        b'{"equipment_id": "press-02", "ts": "' + ts.encode() + b'", "features": {"air_temp_k": ' + b"9" * 500 + b"}}",
        orjson.dumps({"equipment_id": "press-02", "ts": ts, "features": {"air_temp_k": "hot"}}),
        orjson.dumps({"equipment_id": ["press-02"], "ts": ts, "features": {"air_temp_k": 1.0}}),
        orjson.dumps({"equipment_id": "press-02", "ts": True, "features": {"air_temp_k": 1.0}}),
        orjson.dumps({"equipment_id": "'; DROP TABLE serve_ml_predictions; --", "ts": ts,
                      "features": {"air_temp_k": 1.0}}),
        orjson.dumps({"equipment_id": "press-02", "ts": ts, "features": {f"f{i}": 1.0 for i in range(300)}}),
    ]
    while len(docs) < n:
        kind = rng.randrange(3)
        if kind == 0:
            docs.append(rng.randbytes(rng.randrange(1, 400)))
        else:  # a distinct ts each: a splice that happens to stay a valid reading is stored under its own key
            ts_i = (t0 + dt.timedelta(milliseconds=len(docs))).isoformat()
            good = orjson.dumps({"equipment_id": "press-02", "ts": ts_i, "power": "7.5kW",
                                 "features": {"air_temp_k": 300.0, "process_temp_k": 310.0}})
            cut = rng.randrange(len(good))
            docs.append(good[:cut] + rng.choice(FRAGMENTS) + good[cut + (kind == 2):])
    return docs


def good_readings(t0: dt.datetime, n: int) -> list[bytes]:
    return [orjson.dumps({"equipment_id": "press-02", "ts": (t0 + dt.timedelta(milliseconds=i)).isoformat(),
                          "power": "7.5kW", "features": {"air_temp_k": 300.0 + i % 3, "process_temp_k": 310.0}})
            for i in range(n)]


def test_kafka_fuzz_everything_bad_is_dead_lettered(stack: Stack) -> None:
    t0, rng = now(), random.Random(20261123)
    bad, good = hostile_payloads(rng, t0 - dt.timedelta(minutes=5), 200), good_readings(t0, 100)
    # A hostile payload that happens to be a valid reading is not hostile; none should be.
    values = [(b"press-02", v) for pair in zip(good, bad[:100], strict=True) for v in pair]
    values += [(b"k", v) for v in bad[100:]]
    produce_raw(stack, stack.settings.features_topic, values)
    assert wait_count(stack, "serve_ml_predictions", "press-02", t0, len(good)) == len(good)
    # A value over the dead-letter limit arrives as a prefix, named by its sha256.
    dlq = {}
    for r in consume_all(stack, stack.settings.dead_letter_topic):
        headers = dict(r.headers)
        dlq[headers["sha256"].decode() if headers.get("truncated") else r.value] = headers
    def key(v: bytes) -> bytes | str:
        return hashlib.sha256(v).hexdigest() if len(v) > DLQ_MAX_VALUE_BYTES else v

    missing = [v[:60] for v in bad if key(v) not in dlq]
    print(f"kafka fuzz: sent good={len(good)} bad={len(bad)} dead_lettered={len(bad) - len(missing)}")
    assert not missing, missing[:5]
    assert all(dlq[key(v)]["reason"] for v in bad)
    assert stack.health()["stream-0"]["state"] == "running"


def test_mqtt_fuzz_everything_bad_is_dead_lettered(stack: Stack, mosquitto: int) -> None:
    import aiomqtt

    t0, rng = now(), random.Random(7)
    # a minute of press-02's history no other test writes (they write around now), so
    # whatever is stored in it is a hostile payload that happened to be valid
    hostile_t0 = t0 - dt.timedelta(days=9, minutes=5)
    bad = hostile_payloads(rng, hostile_t0, 60)
    bad = [b for b in bad if len(b) < 200_000]  # what Mosquitto's default packet limit lets through
    good = [orjson.dumps({"ts": (t0 + dt.timedelta(milliseconds=i)).isoformat(), "power": "7.5kW",
                          "features": {"air_temp_k": 300.0, "process_temp_k": 310.0}}) for i in range(40)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and stack.health().get("mqtt-bridge", {}).get("state") != "running":
        time.sleep(0.3)
    before = stack.health()["mqtt-bridge"]

    async def publish() -> None:
        async with aiomqtt.Client("127.0.0.1", mosquitto) as client:
            for i in range(max(len(good), len(bad))):
                if i < len(good):
                    await client.publish("serve-ml/press-02/features", good[i], qos=1)
                if i < len(bad):
                    await client.publish("serve-ml/press-02/features", bad[i], qos=1)

    scorer_before = stack.health()["stream-0"]["dead_lettered"]
    asyncio.run(publish())
    assert wait_count(stack, "serve_ml_predictions", "press-02", t0, len(good)) == len(good)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and stack.health()["mqtt-bridge"]["received"] < before["received"] + len(good) + len(bad):
        time.sleep(0.3)
    time.sleep(2.0)  # let the scorer dead-letter what the bridge forwarded
    after = stack.health()
    bridge_dead = after["mqtt-bridge"]["dead_lettered"] - before["dead_lettered"]
    forwarded = after["mqtt-bridge"]["forwarded"] - before["forwarded"]
    scorer_dead = after["stream-0"]["dead_lettered"] - scorer_before
    stored_bad = q(stack, "SELECT count(*) AS n FROM serve_ml_predictions WHERE equipment_id = 'press-02' "
                          "AND time >= $1 AND time < $2", hostile_t0, hostile_t0 + dt.timedelta(minutes=1))[0]["n"]
    print(f"mqtt fuzz: sent good={len(good)} bad={len(bad)} bridge_dead_lettered={bridge_dead} "
          f"scorer_dead_lettered={scorer_dead} forwarded={forwarded} valid_by_accident={stored_bad}")
    assert after["mqtt-bridge"]["state"] == "running" and after["stream-0"]["state"] == "running"
    # The bridge checks the message; whether the equipment and its features can be
    # scored is the scorer's call, which dead-letters the rest. Nothing is lost.
    assert forwarded == len(good) + len(bad) - bridge_dead
    assert bridge_dead + scorer_dead + stored_bad == len(bad)
    assert count(stack, "serve_ml_predictions", "press-02", t0) == len(good)
    dlq = [dict(r.headers) for r in consume_all(stack, stack.settings.dead_letter_topic)]
    from_bridge = [h for h in dlq if h.get("source_topic") == b"serve-ml/press-02/features"]
    assert len(from_bridge) >= bridge_dead and all(h["reason"] for h in from_bridge)
