"""MQTT bridge: ``serve-ml/<equipment_id>/features`` into the Kafka features topic.

Delivery: at least once from the publisher to the bridge (MQTT QoS 1, persistent
session), then at least once from the bridge into Kafka (``acks=all``, one message
at a time). The MQTT client library acknowledges a message when it arrives, before
the bridge has forwarded it, so a bridge process that dies in that window loses
that one in-flight message: at most one per crash. A message that carries its own
``ts`` and is delivered twice is stored once (same equipment, time and content, see
``pipelines.encode.reading_key``); one without ``ts`` is stamped at receipt and
could be stored twice.
Unparseable payloads go to the dead-letter topic with the reason.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any
from urllib.parse import urlsplit

import orjson
import ray

from serve_ml.core.settings import Settings
from serve_ml.pipelines.backoff import Backoff
from serve_ml.pipelines.deadletter import DLQ_MAX_VALUE_BYTES, dead_letter_record
from serve_ml.pipelines.decode import Rejected, decode
from serve_ml.pipelines.stream_metrics import BridgeMetrics

log = logging.getLogger("serve_ml.mqtt")


def to_kafka_payload(topic: str, payload: bytes, settings: Settings, now: dt.datetime) -> tuple[str, bytes]:
    """Return ``(equipment_id, kafka_value)``; raises Rejected with the reason."""
    levels = topic.split("/")
    if len(levels) != 3 or not levels[1]:
        raise Rejected(f"topic {topic!r} is not serve-ml/<equipment_id>/features")
    r = decode(payload, equipment_id=levels[1], max_bytes=settings.max_message_bytes, now=now, default_ts=now,
               max_age_s=settings.accepted_age_s(), max_future_s=settings.max_reading_future_s)
    body: dict[str, Any] = {"equipment_id": r.reading.equipment_id, "ts": r.ts.isoformat(),
                            "features": dict(r.reading.features)}
    if r.reading.power:
        body["power"] = r.reading.power
    if r.reading.model_version:
        body["model_version"] = r.reading.model_version
    if r.reading_id is not None:
        body["reading_id"] = r.reading_id
    return r.reading.equipment_id, orjson.dumps(body)




@ray.remote(num_cpus=0.05, max_restarts=-1, max_task_retries=-1, max_concurrency=4)  # type: ignore[call-overload]
class MqttBridge:
    """Forwards until cancelled. Whatever fails (the MQTT broker, Kafka, an unexpected
    error) the bridge says ``degraded``, waits and tries again; a message Kafka does
    not take is held, and retried, until it does."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.s = settings
        self.bootstrap = bootstrap
        self.counts = {"received": 0, "forwarded": 0, "dead_lettered": 0, "kafka_errors": 0, "mqtt_errors": 0,
                       "restarts": 0}
        self.state = "starting"
        self.last_error: str | None = None
        self.metrics = BridgeMetrics()

    async def health(self) -> dict[str, Any]:
        return {"state": self.state, "last_error": self.last_error, **self.counts}

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            forwarded = self.counts["forwarded"] + self.counts["dead_lettered"]
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never end while the state says otherwise
                self._degraded(exc, "restarts")
                if self.counts["forwarded"] + self.counts["dead_lettered"] > forwarded:
                    backoff.reset()  # the pace is for failures in a row
                await backoff.sleep()

    def _degraded(self, exc: BaseException, counter: str) -> None:
        self.state = "degraded"
        self.counts[counter] += 1
        self.metrics.failure({"kafka_errors": "kafka", "mqtt_errors": "mqtt"}.get(counter, "bridge"))
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        log.warning("MQTT bridge: %s", self.last_error)

    async def _run_once(self) -> None:
        import aiomqtt
        from aiokafka import AIOKafkaProducer

        url = urlsplit(self.s.mqtt_url or "mqtt://127.0.0.1:1883")
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=2,
                                    request_timeout_ms=10_000)
        try:
            await producer.start()
            async with aiomqtt.Client(url.hostname or "127.0.0.1", url.port or 1883,
                                      identifier="serve-ml-bridge", clean_session=False) as client:
                await client.subscribe(self.s.mqtt_topic, qos=1)
                self.state = "running"
                async for msg in client.messages:
                    await self._forward(producer, str(msg.topic), bytes(msg.payload))
        except aiomqtt.MqttError as exc:
            self._degraded(exc, "mqtt_errors")
        finally:
            try:
                await asyncio.wait_for(producer.stop(), 10)
            except Exception as exc:  # a broker that is gone cannot be left politely
                log.debug("closing the producer: %s", exc)

    async def _forward(self, producer: Any, topic: str, payload: bytes) -> None:
        from aiokafka.errors import KafkaError

        self.counts["received"] += 1
        try:
            eq, value = to_kafka_payload(topic, payload, self.s, dt.datetime.now(dt.UTC))
            send = (self.s.features_topic, value, eq.encode(), [])  # type: ignore[var-annotated]
            counter = "forwarded"
        except Rejected as exc:
            value, headers = dead_letter_record(payload, str(exc), DLQ_MAX_VALUE_BYTES)  # type: ignore[assignment]
            send = (self.s.dead_letter_topic, value, topic.encode()[:256],
                    headers + [("source_topic", topic.encode()[:256])])
            counter = "dead_lettered"
        backoff = Backoff()
        while True:
            try:
                await producer.send_and_wait(send[0], send[1], key=send[2], headers=send[3] or None)
                break
            except KafkaError as exc:  # held: the MQTT session keeps what arrives meanwhile
                self._degraded(exc, "kafka_errors")
                await backoff.sleep()
        self.counts[counter] += 1
        self.metrics.sent("reading" if counter == "forwarded" else "dead_letter")
        self.state = "running"
