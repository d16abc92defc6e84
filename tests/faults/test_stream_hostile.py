"""Records a hostile or broken producer can send that used to stop the stream for
good or bend it: timestamps outside datetime's range, readings stamped decades
away, a record larger than any producer may send, and a Kafka outage under the MQTT
bridge. Through the real broker, PostgreSQL and scorer actors; each test prints
``FAULT name: counts``."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import time

import aiomqtt
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from serve_ml.pipelines.deadletter import DLQ_MAX_VALUE_BYTES
from serve_ml.pipelines.stack import Stack
from tests.streamkit import consume_all, count, now, q, report, wait_count

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def good(t0: dt.datetime, n: int, eq: str = "press-02") -> list[bytes]:
    return [orjson.dumps({"equipment_id": eq, "ts": (t0 + dt.timedelta(milliseconds=i)).isoformat(), "power": "7.5kW",
                          "features": {"air_temp_k": 300.0, "process_temp_k": 310.0}}) for i in range(n)]


def produce(stack: Stack, records: list[tuple[bytes, int | None]], max_request_size: int = 1 << 20) -> None:
    """``(value, timestamp_ms)`` in this order, one partition (key ``press-02``)."""
    async def go() -> None:
        p = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", max_request_size=max_request_size)
        await p.start()
        try:
            for value, ts_ms in records:
                await p.send_and_wait(stack.settings.features_topic, value, key=b"press-02", timestamp_ms=ts_ms)
        finally:
            await p.stop()
    asyncio.run(go())


def partitions_outside(stack: Stack, lo: dt.date, hi: dt.date) -> list[str]:
    names = [r["relname"] for r in q(stack, "SELECT relname FROM pg_class WHERE relname ~ '^serve_ml_(readings|predictions)_p[0-9]{8}$'")]
    return [n for n in names if not lo <= dt.datetime.strptime(n[-8:], "%Y%m%d").date() <= hi]


def dead_letters(stack: Stack, marker: bytes) -> list:
    return [r for r in consume_all(stack, stack.settings.dead_letter_topic) if marker in (r.value or b"")]


def test_timestamps_out_of_range_or_window_are_dead_lettered_and_the_stream_goes_on(stack: Stack) -> None:
    t0 = now()
    marker = f"hostile-ts-{t0.timestamp()}"
    no_ts = orjson.dumps({"equipment_id": "press-02", "features": {"air_temp_k": 300.0}, "model_version": marker})

    def with_ts(ts: object) -> bytes:
        return orjson.dumps({"equipment_id": "press-02", "ts": ts, "features": {"air_temp_k": 300.0},
                             "model_version": marker})

    hostile = [
        (no_ts, 253402300800000),  # year 10000: datetime cannot hold it
        (no_ts, 253402214400000),  # 9999-12-31: a real time, far outside the window
        (no_ts, 1000),             # 1970, through the record timestamp
        (with_ts("9999-12-31T23:59:59+00:00"), None),
        (with_ts("1970-01-01T00:00:00+00:00"), None),
        (with_ts(0), None),
        (with_ts(1e15), None),
    ]
    readings = good(t0, 50)
    produce(stack, [*[(v, None) for v in readings[:25]], *hostile, *[(v, None) for v in readings[25:]]])
    stored = wait_count(stack, "serve_ml_predictions", "press-02", t0, len(readings))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(dlq := dead_letters(stack, marker.encode())) < len(hostile):
        time.sleep(0.5)
    reasons = sorted(dict(r.headers)["reason"].decode() for r in dlq)
    today = dt.datetime.now(dt.UTC).date()
    window = (today - dt.timedelta(days=400), today + dt.timedelta(days=2))
    strays = partitions_outside(stack, *window)
    report("hostile-timestamps", sent_good=len(readings), sent_hostile=len(hostile), stored=stored,
           dead_lettered=len(dlq), stray_partitions=len(strays), lost=len(readings) - stored)
    assert stored == len(readings)
    assert len(dlq) == len(hostile), reasons
    assert all("ts:" in r for r in reasons), reasons
    assert not strays, strays
    assert stack.health()["stream-0"]["state"] == "running"


def test_a_record_too_large_to_dead_letter_whole_is_dead_lettered_as_a_prefix(stack: Stack) -> None:
    t0 = now()
    big = orjson.dumps({"equipment_id": "press-02", "ts": t0.isoformat(), "features": {"air_temp_k": 300.0},
                        "pad": "x" * (3 << 20)})  # over the dead-letter producer's 1 MiB request limit
    readings = good(t0 + dt.timedelta(seconds=1), 40)
    produce(stack, [(readings[0], None), (big, None), *[(v, None) for v in readings[1:]]], max_request_size=8 << 20)
    stored = wait_count(stack, "serve_ml_predictions", "press-02", t0, len(readings))
    digest = hashlib.sha256(big).hexdigest().encode()
    deadline, found = time.monotonic() + 30, []
    while time.monotonic() < deadline and not found:
        found = [r for r in consume_all(stack, stack.settings.dead_letter_topic)
                 if dict(r.headers).get("sha256") == digest]
        time.sleep(0.5)
    report("oversize-record", size=len(big), stored=stored, dead_lettered=len(found), lost=len(readings) - stored)
    assert stored == len(readings)
    assert len(found) == 1
    headers = dict(found[0].headers)
    assert headers["original_size"] == str(len(big)).encode() and headers["truncated"] == b"true"
    assert big.startswith(found[0].value) and 0 < len(found[0].value) <= DLQ_MAX_VALUE_BYTES
    assert b"bytes; the limit is" in headers["reason"]
    assert stack.health()["stream-0"]["state"] == "running"


def test_mqtt_bridge_degrades_during_a_kafka_outage_then_forwards_what_it_held(cluster, stack: Stack,
                                                                               mosquitto: int) -> None:
    if stack.kafka is None:
        pytest.skip("KAFKA_BOOTSTRAP points at an external broker this test must not stop")
    t0 = now()
    eq = "pump-03"
    docs = [orjson.dumps({"ts": (t0 + dt.timedelta(milliseconds=i)).isoformat(), "power": "5.5kW",
                          "features": {"air_temp_k": 300.0, "process_temp_k": 310.0}}) for i in range(20)]

    async def publish(payloads: list[bytes]) -> None:
        async with aiomqtt.Client("127.0.0.1", mosquitto) as client:
            for d in payloads:
                await client.publish(f"serve-ml/{eq}/features", d, qos=1)

    def bridge() -> dict:
        return stack.health().get("mqtt-bridge", {})

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and bridge().get("state") != "running":
        time.sleep(0.3)
    stack.kafka.stop()
    try:
        asyncio.run(publish(docs[:10]))
        deadline, states = time.monotonic() + 40, set()
        while time.monotonic() < deadline and "degraded" not in states:
            states.add(bridge().get("state"))
            time.sleep(0.3)
    finally:
        stack.restart_broker()
    asyncio.run(publish(docs[10:]))
    stored = wait_count(stack, "serve_ml_predictions", eq, t0, len(docs), timeout_s=120)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and bridge().get("state") != "running":
        time.sleep(0.3)
    after = bridge()
    report("mqtt-kafka-outage", sent=len(docs), stored=stored, kafka_errors=after.get("kafka_errors"),
           bridge_state=after.get("state"), lost=len(docs) - stored)
    assert "degraded" in states, states
    assert after["state"] == "running" and after["kafka_errors"] > 0
    # The held message and what the MQTT session kept meanwhile all arrive, once each.
    assert stored == len(docs) == count(stack, "serve_ml_predictions", eq, t0)
    deadline, text = time.monotonic() + 30, ""
    while time.monotonic() < deadline and 'ray_serve_ml_mqtt_failed_total{' not in text:
        text = httpx.get(f"http://127.0.0.1:{cluster.metrics_port}/metrics", timeout=10).text
        time.sleep(1)
    assert re.search(r'ray_serve_ml_mqtt_failed_total\{[^}]*where="kafka"', text)  # the dashboard's failure panel


def test_readings_are_told_apart_by_content_or_reading_id_not_by_timestamp(stack: Stack) -> None:
    # Three hours back: other tests count what is stored in the hour after their own start.
    t0 = now().replace(microsecond=0) - dt.timedelta(hours=3)
    # Values inside the bundle's normal range: an anomaly here would leave an alert open
    # that the alert tests of this equipment would then find instead of their own.
    eq = "press-02"

    def doc(ts: dt.datetime, temp: float, reading_id: str | None = None) -> bytes:
        body = {"equipment_id": eq, "ts": ts.isoformat(), "power": "7.5kW",
                "features": {"air_temp_k": temp, "process_temp_k": 310.0}}
        return orjson.dumps(body if reading_id is None else {**body, "reading_id": reading_id})

    before = stack.health()["stream-0"]
    # Two machines' worth of distinct readings stamped alike, a squatter on a future
    # timestamp, the genuine reading arriving after it, and a plain redelivery.
    same_ts = [doc(t0, 300.0), doc(t0, 300.2)]
    squatter = doc(t0 + dt.timedelta(seconds=1), 300.4)
    genuine = doc(t0 + dt.timedelta(seconds=1), 300.6)
    first = doc(t0 + dt.timedelta(seconds=2), 300.8, reading_id="r-1")
    produce(stack, [(v, None) for v in [*same_ts, squatter, first]])
    assert wait_count(stack, "serve_ml_readings", eq, t0, 4) == 4
    conflicting = doc(t0 + dt.timedelta(seconds=2), 301.0, reading_id="r-1")
    # The same reading again under its id, written another way (spacing, key order, an
    # integer): the same values, so a duplicate, not a conflict.
    rewritten = json.dumps({"reading_id": "r-1", "features": {"process_temp_k": 310, "air_temp_k": 300.8},
                            "power": "7.5kW", "ts": (t0 + dt.timedelta(seconds=2)).isoformat(),
                            "equipment_id": eq}).encode()
    produce(stack, [(genuine, None), (same_ts[0], None), (first, None), (conflicting, None), (rewritten, None)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and stack.health()["stream-0"]["conflicts"] == before["conflicts"]:
        time.sleep(0.3)
    time.sleep(1.0)
    after = stack.health()["stream-0"]
    rows = q(stack, "SELECT time, features::text AS f FROM serve_ml_readings WHERE equipment_id = $1 AND time >= $2 "
                    "AND time < $3 ORDER BY time, f", eq, t0, t0 + dt.timedelta(minutes=1))
    preds = count(stack, "serve_ml_predictions", eq, t0)
    dlq = [dict(r.headers)["reason"].decode() for r in consume_all(stack, stack.settings.dead_letter_topic)
           if r.value == conflicting]
    report("reading-identity", stored=len(rows), predictions=preds,
           duplicates=after["duplicates"] - before["duplicates"], conflicts=after["conflicts"] - before["conflicts"],
           dead_lettered=len(dlq))
    temps = [orjson.loads(r["f"])["air_temp_k"] for r in rows]
    assert sorted(temps) == [300.0, 300.2, 300.4, 300.6, 300.8], temps  # distinct readings all stored, once each
    assert preds == 5
    assert after["duplicates"] - before["duplicates"] == 3  # the redelivery, the repeated and the rewritten reading_id
    assert after["conflicts"] - before["conflicts"] == 1 and len(dlq) == 1 and "reading_id" in dlq[0]
