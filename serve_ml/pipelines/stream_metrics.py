"""Prometheus metrics of the stream: the scorer actors and the MQTT bridge.

Recorded through Ray's metrics agent like the replicas' (``deployments.metrics``),
so they are scraped from the same port, prefixed ``ray_``. Per micro-batch, not
per reading: a handful of calls per batch. Labels are bounded: partitions and
scorer names are few, equipment ids only those with a loaded bundle, and
dead-letter reasons are folded into a fixed set of kinds (:func:`reason_kind`).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

BATCH_SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
REASON_KINDS = ("json", "size", "timestamp", "features", "equipment", "power", "model_version", "reading_id",
                "fields", "conflict", "other")


def reason_kind(reason: str) -> str:
    """The kind of a dead-letter reason, for a label: reasons themselves carry
    values (timestamps, names) and would make a series per message."""
    r = reason.lower()
    for kind, marks in (("conflict", ("already stored",)), ("size", ("bytes; the limit",)),
                        ("json", ("json", "empty message")), ("timestamp", ("ts:",)),
                        ("equipment", ("equipment_id", "equipment ")), ("power", ("power",)),
                        ("model_version", ("model_version",)), ("reading_id", ("reading_id",)),
                        ("features", ("features", "missing", "not a finite", "unknown feature")),
                        ("fields", ("unknown fields", "topic "))):
        if any(m in r for m in marks):
            return kind
    return "other"


class StreamMetrics:
    """One per scorer actor. Construct inside the actor, never at import."""

    def __init__(self, scorer: str) -> None:
        from ray.util import metrics as m

        self.tags = {"scorer": scorer}
        self.lag = m.Gauge("serve_ml_stream_lag", "Records behind the broker's high watermark, per partition.",
                           tag_keys=("scorer", "partition"))
        self.consumed = m.Counter("serve_ml_stream_consumed", "Records taken from Kafka.", tag_keys=("scorer",))
        self.stored = m.Counter("serve_ml_stream_stored", "Readings stored with their prediction.",
                                tag_keys=("scorer",))
        self.duplicates = m.Counter("serve_ml_stream_duplicates", "Redelivered readings already stored.",
                                    tag_keys=("scorer",))
        self.dead = m.Counter("serve_ml_stream_dead_lettered", "Records sent to the dead-letter topic, by kind "
                              "of reason.", tag_keys=("scorer", "reason"))
        self.write_seconds = m.Histogram("serve_ml_stream_batch_write_seconds", "Time to store one micro-batch "
                                         "(COPY, alerts, commit).", boundaries=BATCH_SECONDS_BUCKETS,
                                         tag_keys=("scorer",))
        self.alerts = m.Counter("serve_ml_stream_alerts", "Alerts opened and resolved by the stream.",
                                tag_keys=("scorer", "event"))
        self.anomalies = m.Counter("serve_ml_stream_anomalies", "Anomalous readings the stream stored, by "
                                   "equipment.", tag_keys=("equipment",))

    def batch(self, *, consumed: int, stored: int, duplicates: int, write_s: float, opened: int, resolved: int,
              anomalies: Iterable[tuple[str, int]]) -> None:
        self.consumed.inc(consumed, self.tags)
        if stored:
            self.stored.inc(stored, self.tags)
        if duplicates:
            self.duplicates.inc(duplicates, self.tags)
        self.write_seconds.observe(write_s, self.tags)
        if opened:
            self.alerts.inc(opened, {**self.tags, "event": "opened"})
        if resolved:
            self.alerts.inc(resolved, {**self.tags, "event": "resolved"})
        for equipment, n in anomalies:
            if n:
                self.anomalies.inc(n, {"equipment": equipment})

    def dead_lettered(self, reasons: Iterable[str]) -> None:
        for kind, n in Tally(map(reason_kind, reasons)).items():
            self.dead.inc(n, {**self.tags, "reason": kind})

    def partition_lag(self, partition: int, lag: int) -> None:
        self.lag.set(lag, {**self.tags, "partition": str(partition)})


class BridgeMetrics:
    """The MQTT bridge's forwarded and failed messages."""

    def __init__(self) -> None:
        from ray.util import metrics as m

        self.forwarded = m.Counter("serve_ml_mqtt_forwarded", "MQTT messages forwarded to Kafka, by outcome "
                                   "(reading, or dead letter).", tag_keys=("outcome",))
        self.failed = m.Counter("serve_ml_mqtt_failed", "Failed attempts, by where (kafka, mqtt, bridge).",
                                tag_keys=("where",))

    def sent(self, outcome: str) -> None:
        self.forwarded.inc(1, {"outcome": outcome})

    def failure(self, where: str) -> None:
        self.failed.inc(1, {"where": where})
