"""Bring up the stream side: database, broker, topics, scorer actors, MQTT bridge.

Each service is the configured one (``DATABASE_URL``, ``KAFKA_BOOTSTRAP``,
``SERVE_ML_MQTT_URL``) or, for PostgreSQL and Kafka, an embedded one started here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import ray

from serve_ml.core.settings import Settings
from serve_ml.operations.notify_config import load_config
from serve_ml.pipelines.consumer import StreamScorer
from serve_ml.pipelines.mqtt import MqttBridge
from serve_ml.pipelines.notifier import NotifierActor
from serve_ml.pipelines.schema import migrate
from serve_ml.pipelines.services import EmbeddedKafka, EmbeddedPostgres, mask_url

log = logging.getLogger("serve_ml.stack")
FEATURE_PARTITIONS = 4


@dataclass
class Stack:
    settings: Settings
    database_url: str
    bootstrap: str
    mode: str
    postgres: EmbeddedPostgres | None = None
    kafka: EmbeddedKafka | None = None
    scorers: list[Any] = field(default_factory=list)
    bridge: Any = None
    notifier: Any = None
    # ObjectRefs of the actors' run() calls: this process owns them, and with them the
    # retries Ray makes when it restarts a killed actor.
    _runs: list[Any] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "database_url": mask_url(self.database_url), "storage_mode": self.mode,
            "database": "embedded" if self.postgres else "external",
            "kafka_bootstrap": self.bootstrap, "kafka": ("embedded Tansu, in-memory: unconsumed messages are lost if it restarts" if self.kafka
                      else "external"),
            "topics": {"features": self.settings.features_topic, "alerts": self.settings.alerts_topic,
                       "dead_letter": self.settings.dead_letter_topic},
            "mqtt": self.settings.mqtt_url,
        }

    def start_actors(self) -> None:
        s = self.settings
        for i in range(s.stream_consumers):
            # SPREAD: on a cluster of several nodes the scorers land on different ones, so
            # one node lost takes one scorer (its partitions go to the others meanwhile).
            actor = StreamScorer.options(name=f"serve-ml-stream-{i}", namespace="serve-ml",  # type: ignore[attr-defined]
                                         scheduling_strategy="SPREAD").remote(
                s.without_secrets(), self.database_url, self.bootstrap, self.mode, f"stream-{i}",
                embedded_broker=self.kafka is not None)
            self.scorers.append(actor)
            self._runs.append(actor.run.remote())
        if s.mqtt_url:
            self.bridge = MqttBridge.options(name="serve-ml-mqtt", namespace="serve-ml").remote(  # type: ignore[attr-defined]
                s.without_secrets(), self.bootstrap)
            self._runs.append(self.bridge.run.remote())
        if s.notifications_file is not None:
            load_config(s.notifications_file)  # refuse a bad file here, with its message, not in an actor
            self.notifier = NotifierActor.options(name="serve-ml-notifier", namespace="serve-ml").remote(  # type: ignore[attr-defined]
                s.without_secrets(), self.database_url)
            self._runs.append(self.notifier.run.remote())

    def health(self, timeout_s: float = 5.0) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, a in enumerate(self.scorers):
            try:
                out[f"stream-{i}"] = ray.get(a.health.remote(), timeout=timeout_s)
            except Exception as exc:  # restarting or dead: say so
                out[f"stream-{i}"] = {"state": f"unavailable: {type(exc).__name__}"}
        if self.bridge is not None:
            try:
                out["mqtt-bridge"] = ray.get(self.bridge.health.remote(), timeout=timeout_s)
            except Exception as exc:
                out["mqtt-bridge"] = {"state": f"unavailable: {type(exc).__name__}"}
        if self.notifier is not None:
            try:
                out["notifier"] = ray.get(self.notifier.health.remote(), timeout=timeout_s)
            except Exception as exc:
                out["notifier"] = {"state": f"unavailable: {type(exc).__name__}"}
        return out

    def restart_broker(self) -> None:
        """Start the embedded broker again on the same port and recreate the topics.

        The embedded build keeps messages in memory, so what it held unconsumed is
        gone; consumers rejoin by themselves and, finding no committed offsets,
        start from the beginning of the new log.
        """
        if self.kafka is None:
            raise RuntimeError("the broker is external (KAFKA_BOOTSTRAP); restart it where it runs")
        self.kafka.stop()
        self.kafka.start()
        asyncio.run(create_topics(self.bootstrap, self.settings))

    def supervise_broker(self) -> bool:
        """Restart the embedded broker if its process has died; True if it did."""
        if self.kafka is None or self.kafka.running:
            return False
        log.warning("embedded Kafka broker (Tansu) exited; restarting it on %s "
                    "(in-memory: unconsumed messages were lost)", self.bootstrap)
        self.restart_broker()
        return True

    def stop_actors(self, timeout_s: float = 10.0) -> None:
        """Kill the stream actors and wait until their names are free again, so a
        following :meth:`start_actors` does not collide with the dying ones."""
        names = [f"serve-ml-stream-{i}" for i in range(len(self.scorers))] + (["serve-ml-mqtt"] if self.bridge else []) \
            + (["serve-ml-notifier"] if self.notifier else [])
        for a in [*self.scorers, self.bridge, self.notifier]:
            if a is not None:
                ray.kill(a, no_restart=True)
        self.scorers, self.bridge, self.notifier, self._runs = [], None, None, []
        deadline = time.monotonic() + timeout_s
        for name in names:
            while time.monotonic() < deadline:
                try:
                    ray.get_actor(name, namespace="serve-ml")
                except ValueError:
                    break
                time.sleep(0.05)

    def stop(self) -> None:
        if ray.is_initialized():
            self.stop_actors()
        if self.kafka:
            self.kafka.stop()
        if self.postgres:
            self.postgres.close()


async def create_topics(bootstrap: str, settings: Settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(settings.features_topic, FEATURE_PARTITIONS, 1),
                  NewTopic(settings.alerts_topic, 1, 1), NewTopic(settings.dead_letter_topic, 1, 1)]
        new = [t for t in wanted if t.name not in existing]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def prepare_database(url: str, settings: Settings) -> str:
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def start_stack(settings: Settings, *, actors: bool = True) -> Stack:
    """Start (or connect to) PostgreSQL and Kafka, migrate, create topics, start actors.

    Ray must already be initialised when ``actors`` is true.
    """
    pg = kafka = None
    url = settings.database_url
    if url is None:
        pg = EmbeddedPostgres(settings.state_dir / "pgdata")
        url = pg.start()
    bootstrap = settings.kafka_bootstrap
    if bootstrap is None:
        kafka = EmbeddedKafka.create(settings.state_dir)
        bootstrap = kafka.start()
    mode = asyncio.run(prepare_database(url, settings))
    log.info("storage mode: %s (%s)", mode, "hypertables" if mode == "timescaledb" else "native partitions")
    asyncio.run(create_topics(bootstrap, settings))
    stack = Stack(settings, url, bootstrap, mode, pg, kafka)
    if actors:
        stack.start_actors()
    return stack
