"""Stream faults: the scorer actor killed mid-batch, PostgreSQL stopped, the broker
restarted, each under steady input. Every test prints ``FAULT name: counts``."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import ray

from serve_ml.pipelines.simulator import Machine
from serve_ml.pipelines.stack import Stack
from tests.streamkit import SteadyProducer, in_broker_log, locate, now, q, report, wait_stored

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def duplicates(times: list) -> int:
    return sum(n - 1 for n in Counter(times).values())


def wait_state(stack: Stack, state: str, timeout_s: float) -> float | None:
    """Seconds until the scorer reports ``state``, or None if it never did."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if stack.health(timeout_s=2)["stream-0"].get("state") == state:
            return time.monotonic() - t0
        time.sleep(0.2)
    return None


def test_actor_killed_ten_times_mid_batch_stores_every_reading_once(stack: Stack) -> None:
    t0, total, kills = now(), 16_000, 0
    with SteadyProducer(stack, Machine("pump-03", "7.5kW"), rate_hz=1000, total=total, seed=501) as producer:
        time.sleep(1.0)
        while kills < 10:
            ray.kill(stack.scorers[0], no_restart=False)  # Ray restarts it; run() is retried
            kills += 1
            time.sleep(1.2)
        producer.wait(60)
    sent = producer.acked_ts()
    stored = wait_stored(stack, "serve_ml_readings", "pump-03", t0, sent)
    predictions = wait_stored(stack, "serve_ml_predictions", "pump-03", t0, sent)
    lost = len(sent - set(stored))
    report("actor-kill", kills=kills, sent=len(sent), stored=len(stored), predictions=len(predictions),
           duplicated=duplicates(stored), lost=lost, producer_failures=len(producer.failed))
    assert len(sent) == total and not producer.failed
    assert lost == 0 and duplicates(stored) == 0 and set(stored) == sent
    assert set(predictions) == sent and duplicates(predictions) == 0
    # the hourly rollups, updated in each batch's transaction, count every stored reading once
    [counts] = q(stack, "SELECT (SELECT count(*) FROM serve_ml_readings WHERE equipment_id = 'pump-03' "
                        "AND time >= date_trunc('hour', $1::timestamptz)) AS stored, "
                        "(SELECT coalesce(sum(readings), 0) FROM serve_ml_rollup_verdicts_1h "
                        "WHERE equipment_id = 'pump-03' AND bucket >= date_trunc('hour', $1::timestamptz)) AS rolled, "
                        "(SELECT coalesce(sum(count), 0) FROM serve_ml_rollup_sensors_1h WHERE equipment_id = 'pump-03' "
                        "AND sensor = 'process_temp_k' AND bucket >= date_trunc('hour', $1::timestamptz)) AS sensor",
                 t0)
    report("actor-kill-rollups", stored=counts["stored"], rolled=counts["rolled"], sensor=counts["sensor"])
    assert counts["stored"] >= len(sent) and counts["rolled"] == counts["stored"] == counts["sensor"], dict(counts)


def test_postgres_stopped_20s_degrades_then_resumes_without_loss(stack: Stack, http) -> None:
    if stack.postgres is None:
        pytest.skip("DATABASE_URL points at an external server this test must not stop")
    t0 = now()
    with SteadyProducer(stack, Machine("press-02", "5.5kW"), rate_hz=300, seed=502) as producer:
        time.sleep(2.0)
        stack.postgres.stop()
        try:
            degraded_after_s = wait_state(stack, "degraded", 15)
            api_health = http.get("/stream/health").json()
            time.sleep(max(0.0, 20 - (degraded_after_s or 0)))
        finally:
            stack.postgres.start()
        resumed_after_s = wait_state(stack, "running", 30)
        time.sleep(3.0)
    sent = producer.acked_ts()
    stored = wait_stored(stack, "serve_ml_predictions", "press-02", t0, sent)
    lost = len(sent - set(stored))
    report("postgres-stop-20s", sent=len(sent), stored=len(stored), duplicated=duplicates(stored), lost=lost,
           degraded_after_s=degraded_after_s, resumed_after_s=resumed_after_s,
           producer_failures=len(producer.failed))
    assert degraded_after_s is not None, "never reported degraded while the database was down"
    assert api_health["status"] == "degraded", api_health
    assert resumed_after_s is not None and resumed_after_s < 10, resumed_after_s
    assert not producer.failed and len(sent) > 20 * 300 * 0.8
    assert lost == 0 and duplicates(stored) == 0 and set(stored) == sent
    # the outage is on record as a pipeline-fault alarm, opened and resolved once the database was back
    faults = q(stack, "SELECT a.status, a.detail::text AS detail, array_agg(e.event ORDER BY e.id) AS events "
                      "FROM serve_ml_alerts a JOIN serve_ml_alarm_events e ON e.alarm_id = a.id "
                      "WHERE a.kind = 'pipeline_fault' AND a.source LIKE 'scorer:stream-%' "
                      "AND a.opened_at >= $1 GROUP BY a.id", t0)
    assert faults and all(f["status"] == "resolved" and f["events"] == ["opened", "resolved"] for f in faults), faults


def test_broker_restart_stream_resumes_by_itself(stack: Stack) -> None:
    """The embedded broker keeps messages in memory only: what it had acknowledged but
    not yet delivered when it went down is lost, and counted as such. Everything
    created after it came back that its log holds must be stored, exactly once.

    In the first moments after its restart the in-memory broker has acknowledged
    writes that its log then did not hold (22 buffered readings once; 27 readings of
    the first 0.3 s another time, none in its log, none dead-lettered). That is the
    embedded broker's limit, not the stream's: such readings are reported
    (``lost_buffered``, ``lost_by_broker``) and bounded, not asserted away; a reading
    the broker's log holds and the stream did not store fails the test."""
    if stack.kafka is None:
        pytest.skip("KAFKA_BOOTSTRAP points at an external broker this test must not restart")
    t0 = now()
    with SteadyProducer(stack, Machine("press-02", "7.5kW"), rate_hz=300, seed=503) as producer:
        time.sleep(3.0)
        down_at = time.monotonic()
        stack.kafka.stop()
        time.sleep(3.0)
        stack.restart_broker()
        up_at, up_wall = time.monotonic(), now()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not producer.acked_ts(after=up_at):
            time.sleep(0.2)
        producer_back_s = time.monotonic() - up_at
        time.sleep(8.0)
    before = producer.acked_ts(before=down_at)
    buffered = {ts for ts in producer.acked_ts(after=up_at) if ts < up_wall}
    after = {ts for ts in producer.acked_ts(after=up_at) if ts >= up_wall}
    stored = wait_stored(stack, "serve_ml_predictions", "press-02", t0, after, timeout_s=90)
    lost_before = len(before - set(stored))
    unknown = set(stored) - producer.acked_ts() - set(producer.failed)
    report("broker-restart", acked_before=len(before), acked_after=len(after), stored=len(stored),
           duplicated=duplicates(stored), lost_after_restart=len(after - set(stored)),
           lost_in_memory_broker=lost_before, lost_buffered=len(buffered - set(stored)),
           producer_failures=len(producer.failed),
           producer_back_s=round(producer_back_s, 1))
    assert after, "the producer never got an acknowledgement after the restart"
    lost_after = after - set(stored)
    unstored_in_log = in_broker_log(stack, lost_after) if lost_after else set()
    report("broker-restart-after", lost_by_broker=len(lost_after - unstored_in_log),
           lost_by_stream=len(unstored_in_log))
    assert not unstored_in_log, "readings the broker holds were not stored: " + locate(stack, unstored_in_log,
                                                                                       "press-02")
    assert len(lost_after) <= len(after) // 10, "most readings after the restart were lost: " + \
        locate(stack, lost_after, "press-02")
    assert duplicates(stored) == 0 and not unknown
    assert wait_state(stack, "running", 10) is not None
