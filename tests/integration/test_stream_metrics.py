"""Every stream metric the Grafana dashboard queries is exported by a running
stack once the stream has done what the panel shows (readings stored, a dead
letter, a redelivery, an alert, an MQTT message). The bridge's failure counter
is checked by the Kafka-outage test (tests/faults/test_stream_hostile.py): it
appears only once something failed."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import orjson
import pytest

from serve_ml.pipelines.simulator import Machine, run_kafka, run_mqtt
from serve_ml.pipelines.stack import Stack
from tests.dashboard import dashboard_metrics
from tests.streamkit import now, produce_raw, wait_count

pytestmark = pytest.mark.integration
ONLY_ON_FAILURE = {"ray_serve_ml_mqtt_failed_total"}


def scrape(cluster) -> str:
    return httpx.get(f"http://127.0.0.1:{cluster.metrics_port}/metrics", timeout=10).text


def test_every_stream_panel_metric_is_exported(cluster, stack: Stack, mosquitto: int) -> None:
    t0 = now()
    asyncio.run(run_kafka(stack.bootstrap, stack.settings.features_topic,
                          [Machine("mill-01", "7.5kW", "heat_dissipation", ai4i=True)], 0, total=40, seed=11))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and stack.health().get("mqtt-bridge", {}).get("state") != "running":
        time.sleep(0.3)
    asyncio.run(run_mqtt("127.0.0.1", mosquitto, [Machine("pump-03", "5.5kW")], 0, total=5))
    good = orjson.dumps({"equipment_id": "press-02", "ts": t0.isoformat(), "power": "7.5kW",
                         "features": {"air_temp_k": 300.0, "process_temp_k": 310.0}})
    produce_raw(stack, stack.settings.features_topic, [(b"press-02", good), (b"k", b"not json"),
                                                       (b"press-02", good)])  # the second: a redelivery
    assert wait_count(stack, "serve_ml_predictions", "mill-01", t0, 40) == 40, stack.health()
    assert wait_count(stack, "serve_ml_predictions", "pump-03", t0, 5) == 5, stack.health()
    wanted = dashboard_metrics(stream=True) - ONLY_ON_FAILURE
    assert wanted, "the dashboard has no stream panels"
    # Series are exported every few seconds, and other tests may have made some of
    # these names exist already: wait for this test's own dead letter too.
    deadline, missing, text = time.monotonic() + 90, wanted, ""
    while time.monotonic() < deadline:
        text = scrape(cluster)
        missing = {m for m in wanted if m not in text}
        if 'reason="json"' not in text:
            missing.add('ray_serve_ml_stream_dead_lettered_total{reason="json"}')
        if not missing:
            break
        time.sleep(2)
    print(f"stream metrics: wanted={len(wanted)} missing={sorted(missing)}")
    assert not missing, sorted(missing)
    # labels stay bounded: a reason kind, not the reason text
    reasons = set(re.findall(r'ray_serve_ml_stream_dead_lettered_total\{[^}]*reason="([^"]+)"', text))
    assert "json" in reasons and reasons <= {"json", "size", "timestamp", "features", "equipment", "power",
                                             "model_version", "reading_id", "fields", "conflict", "other"}
    assert re.search(r'ray_serve_ml_stream_lag\{[^}]*partition="\d"', text)
