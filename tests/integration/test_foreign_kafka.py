"""The stream fed by a librdkafka client (confluent-kafka) rather than aiokafka:
every reading it produces to the broker is scored and stored exactly once, and a
malformed one is dead-lettered with its reason while the rest go on."""

from __future__ import annotations

import datetime as dt
import secrets
from collections import Counter

import orjson
import pytest
from confluent_kafka import Producer

from serve_ml.pipelines.stack import Stack
from tests.samples import sim_rows
from tests.streamkit import consume_all, now, wait_stored

pytestmark = pytest.mark.integration


def test_confluent_kafka_producer_feeds_the_stream(stack: Stack) -> None:
    # Stamped in the past, microseconds apart: other tests count what is stored after
    # their own start, and nothing else is stored at these exact times.
    t0 = now() - dt.timedelta(minutes=40, microseconds=secrets.randbelow(10**6))
    rows = sim_rows("normal", 200, "7.5kW", seed=19)
    times = [t0 + dt.timedelta(milliseconds=10 * i, microseconds=7) for i in range(len(rows))]
    producer = Producer({"bootstrap.servers": stack.bootstrap, "acks": "all", "linger.ms": 5,
                         "client.id": "serve-ml-foreign-client-test"})
    failures: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    topic = stack.settings.features_topic
    for ts, features in zip(times, rows, strict=True):
        producer.produce(topic, key=b"press-02", on_delivery=delivered, value=orjson.dumps(
            {"equipment_id": "press-02", "ts": ts.isoformat(), "power": "7.5kW", "features": features}))
    bad = orjson.dumps({"equipment_id": "press-02", "ts": f"yesterday-{t0.timestamp()}", "power": "7.5kW",
                        "features": rows[0]})
    producer.produce(topic, key=b"press-02", value=bad, on_delivery=delivered)
    assert producer.flush(60) == 0 and not failures, failures
    got = Counter(wait_stored(stack, "serve_ml_readings", "press-02", t0, set(times)))
    assert [got[t] for t in times] == [1] * len(times)  # each one, once
    dlq = {r.value: dict(r.headers) for r in consume_all(stack, stack.settings.dead_letter_topic)}
    assert bad in dlq and "ts" in dlq[bad]["reason"].decode(), dlq.get(bad)
