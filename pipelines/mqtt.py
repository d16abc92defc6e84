"""MQTT bridge: ``serve-ml/<equipment_id>/features`` into the Kafka features topic.

Delivery: at least once from the publisher to the bridge (MQTT QoS 1, persistent
session), then at least once from the bridge into Kafka (``acks=all``, one message
at a time). The MQTT client library acknowledges a message when it arrives, before
the bridge has forwarded it, so a bridge process that dies in that window loses
that one in-flight message: at most one per crash. A message that carries its own
``ts`` and is delivered twice is stored once (natural key ``(equipment_id, ts)``);
one without ``ts`` is stamped at receipt and could be stored twice.
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

from pipelines.decode import Rejected, decode
from serve_ml.settings import Settings

log = logging.getLogger("serve_ml.mqtt")


def to_kafka_payload(topic: str, payload: bytes, settings: Settings, now: dt.datetime) -> tuple[str, bytes]:
    """Return ``(equipment_id, kafka_value)``; raises Rejected with the reason."""
    levels = topic.split("/")
    if len(levels) != 3 or not levels[1]:
        raise Rejected(f"topic {topic!r} is not serve-ml/<equipment_id>/features")
    r = decode(payload, equipment_id=levels[1], max_bytes=settings.max_message_bytes, now=now, default_ts=now,
               max_age_s=settings.max_reading_age_s, max_future_s=settings.max_reading_future_s)
    body: dict[str, Any] = {"equipment_id": r.reading.equipment_id, "ts": r.ts.isoformat(),
                            "features": dict(r.reading.features)}
    if r.reading.power:
        body["power"] = r.reading.power
    if r.reading.model_version:
        body["model_version"] = r.reading.model_version
    return r.reading.equipment_id, orjson.dumps(body)


@ray.remote(num_cpus=0.05, max_restarts=-1, max_task_retries=-1, max_concurrency=4)
class MqttBridge:
    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.s = settings
        self.bootstrap = bootstrap
        self.counts = {"received": 0, "forwarded": 0, "dead_lettered": 0}
        self.state = "starting"

    async def health(self) -> dict[str, Any]:
        return {"state": self.state, **self.counts}

    async def run(self) -> None:
        import aiomqtt
        from aiokafka import AIOKafkaProducer

        url = urlsplit(self.s.mqtt_url or "mqtt://127.0.0.1:1883")
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=2)
        await producer.start()
        try:
            while True:
                try:
                    async with aiomqtt.Client(url.hostname or "127.0.0.1", url.port or 1883,
                                              identifier="serve-ml-bridge", clean_session=False) as client:
                        await client.subscribe(self.s.mqtt_topic, qos=1)
                        self.state = "running"
                        async for msg in client.messages:
                            await self._forward(producer, str(msg.topic), bytes(msg.payload))
                except aiomqtt.MqttError as exc:
                    self.state = "degraded"
                    log.warning("MQTT connection lost (%s); reconnecting", exc)
                    await asyncio.sleep(1.0)
        finally:
            await producer.stop()

    async def _forward(self, producer: Any, topic: str, payload: bytes) -> None:
        self.counts["received"] += 1
        try:
            eq, value = to_kafka_payload(topic, payload, self.s, dt.datetime.now(dt.UTC))
            await producer.send_and_wait(self.s.features_topic, value, key=eq.encode())
            self.counts["forwarded"] += 1
        except Rejected as exc:
            await producer.send_and_wait(self.s.dead_letter_topic, payload, key=topic.encode()[:256],
                                         headers=[("reason", str(exc).encode()[:1000]),
                                                  ("source_topic", topic.encode()[:256])])
            self.counts["dead_lettered"] += 1
