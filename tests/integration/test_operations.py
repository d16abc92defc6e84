"""The operations layer against the real PostgreSQL of the shared stack: registry
and locations, thresholds and their history, alarms raised by stored batches with
their lifecycle, live status and hourly rollups (exact under replay).

The HTTP side is the project's API app on an in-process core (no Ray); the write
side is the stream scorer's own ``write_batch``. Equipment ids are unique to this
module: the database is shared with the other integration tests."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from serve_ml.core.settings import Settings
from serve_ml.deployments.api import create_api
from serve_ml.deployments.auth import TokenGuard
from serve_ml.deployments.local import LocalCore
from serve_ml.pipelines.encode import Rows
from serve_ml.pipelines.stack import Stack
from serve_ml.pipelines.store import WriteStats
from serve_ml.scoring.service import ScoringService
from tests import opskit
from tests.opskit import API, OPERATOR, VIEWER, fresh_hour
from tests.samples import sim_rows
from tests.streamkit import consume_all, now, produce_raw, q

EQ = "ops-press-1"
EQ2 = "ops-press-2"
TOPIC = "ops-test.alerts"


@pytest.fixture(scope="module")
def api(stack: Stack, ops_root: Path) -> Iterator[TestClient]:
    with opskit.ops_api(stack, ops_root, TOPIC) as client:
        yield client


def _encode(root: Path, eq: str, rows: list[dict[str, float]], base: dt.datetime) -> Rows:
    return opskit.encode(root, eq, rows, base)


def _write(stack: Stack, *batches: Rows) -> list[WriteStats]:
    return opskit.write(stack, *batches, alerts_topic=TOPIC)


def _hour() -> dt.datetime:
    return fresh_hour()


def test_registry_crud_locations_and_unregistered(api: TestClient, stack: Stack, ops_root: Path) -> None:
    body = {"name": "Press 1", "type": "ops-press", "power": "5.5kW", "location": "ops-site-a/hall-1/line-2",
            "metadata": {"vendor": "acme"}}
    r = api.put(f"{API}/equipment/{EQ}", json=body, headers=OPERATOR)
    assert r.status_code in (200, 201), r.text
    assert r.json()["location"] == ["ops-site-a", "hall-1", "line-2"]
    r = api.put(f"{API}/equipment/{EQ2}", json={**body, "name": "Press 2", "location": ["ops-site-b", "hall-9"]},
                headers=OPERATOR)
    assert r.status_code in (200, 201), r.text
    # replacing answers 200, creating 201
    assert api.put(f"{API}/equipment/{EQ2}", json={**body, "location": ["ops-site-b", "hall-9"]},
                   headers=OPERATOR).status_code == 200
    assert api.get(f"{API}/equipment/{EQ}", headers=VIEWER).json()["metadata"] == {"vendor": "acme"}
    listed = api.get(f"{API}/equipment", params={"location": "ops-site-a"}, headers=VIEWER).json()
    assert [e["equipment_id"] for e in listed["equipment"]] == [EQ]
    tree = api.get(f"{API}/locations", headers=VIEWER).json()
    site_a = next(c for c in tree["children"] if c["name"] == "ops-site-a")
    assert site_a["equipment"] == 1 and site_a["children"][0]["children"][0]["path"] == "ops-site-a/hall-1/line-2"
    # a viewer cannot write; nobody without a token can; bad paths are 422 naming the problem
    assert api.put(f"{API}/equipment/x-1", json=body, headers=VIEWER).status_code == 403
    assert api.put(f"{API}/equipment/x-1", json=body).status_code == 401
    bad = api.put(f"{API}/equipment/x-1", json={**body, "location": "a//b"}, headers=OPERATOR)
    assert bad.status_code == 422 and "empty or space-padded" in bad.json()["message"]
    extra = api.put(f"{API}/equipment/x-1", json={**body, "colour": "red"}, headers=OPERATOR)
    assert extra.status_code == 422 and "colour" in extra.json()["message"]
    assert api.get(f"{API}/equipment/nobody-here", headers=VIEWER).status_code == 404
    # equipment the stream stored but nobody registered is listed as such
    _write(stack, _encode(ops_root, EQ2, sim_rows("normal", 3, "5.5kW"), _hour()))
    assert api.delete(f"{API}/equipment/{EQ2}", headers=OPERATOR).status_code == 200
    assert EQ2 in api.get(f"{API}/equipment", headers=VIEWER).json()["unregistered"]
    assert api.delete(f"{API}/equipment/{EQ2}", headers=OPERATOR).status_code == 404


def test_thresholds_most_specific_wins_and_history_keeps_every_change(api: TestClient) -> None:
    api.put(f"{API}/equipment/{EQ}", json={"type": "ops-press", "location": "ops-site-a/hall-1"}, headers=OPERATOR)
    put = lambda **b: api.put(f"{API}/thresholds", json=b, headers=OPERATOR)  # noqa: E731
    assert put(scope="location", target="ops-site-a", sensor="current_a", warning_max=50, reason="site default",
               actor="ana").status_code == 200
    assert put(scope="type", target="ops-press", sensor="current_a", warning_max=20, critical_max=30,
               reason="press datasheet").status_code == 200
    assert put(scope="location", target="ops-site-a/hall-1", sensor="torque_nm", warning_max=70,
               reason="hall 1").status_code == 200
    applied = api.get(f"{API}/equipment/{EQ}/thresholds", headers=VIEWER).json()["thresholds"]
    assert applied["current_a"]["scope"] == "type" and applied["current_a"]["limits"] == {
        "warning_max": 20.0, "critical_max": 30.0}
    assert applied["torque_nm"]["target"] == "ops-site-a/hall-1"
    # a change keeps the previous value, who and why
    r = put(scope="type", target="ops-press", sensor="current_a", warning_max=18, critical_max=30,
            reason="tightened after audit", actor="ben")
    assert r.json()["version"] >= 2
    hist = api.get(f"{API}/thresholds/history", params={"scope": "type", "target": "ops-press",
                                                         "sensor": "current_a"}, headers=VIEWER).json()["history"]
    assert hist[0]["reason"] == "tightened after audit" and hist[0]["actor"] == "ben (operator)"
    assert hist[0]["previous"]["warning_max"] == 20.0 and hist[0]["current"]["warning_max"] == 18.0
    # refused: disordered limits, no limit at all, no reason, a viewer
    bad = put(scope="type", target="ops-press", sensor="current_a", warning_max=40, critical_max=30, reason="x")
    assert bad.status_code == 422 and "warning_max (40.0) must not be above critical_max (30.0)" in bad.json()["message"]
    assert put(scope="type", target="ops-press", sensor="current_a", reason="x").status_code == 422
    assert put(scope="type", target="ops-press", sensor="current_a", warning_max=1).status_code == 422
    assert api.put(f"{API}/thresholds", json={"scope": "type", "target": "ops-press", "sensor": "current_a",
                                              "warning_max": 1, "reason": "x"}, headers=VIEWER).status_code == 403


def test_breach_opens_a_threshold_alarm_status_follows_and_operator_acks_and_clears(
        api: TestClient, stack: Stack, ops_root: Path) -> None:
    api.put(f"{API}/equipment/{EQ}", json={"type": "ops-press", "location": "ops-site-a/hall-1"}, headers=OPERATOR)
    api.put(f"{API}/thresholds", json={"scope": "equipment", "target": EQ, "sensor": "vibration_rms_mm_s",
                                       "warning_max": 5.0, "critical_max": 9.0, "reason": "ISO 10816 zone C/D"},
            headers=OPERATOR)
    base = _hour()
    normal = sim_rows("normal", 6, "5.5kW", seed=11)
    warn = [{**r, "vibration_rms_mm_s": 6.0} for r in normal[:2]]
    crit = [{**r, "vibration_rms_mm_s": 12.5} for r in normal[2:4]]
    (first,) = _write(stack, _encode(ops_root, EQ, warn + crit, base))
    alarms = api.get(f"{API}/alarms", params={"equipment_id": EQ, "type": "threshold", "state": "active_unack"},
                     headers=VIEWER).json()["alarms"]
    assert len(alarms) == 1 and alarms[0]["source"] == "vibration_rms_mm_s", alarms
    alarm = alarms[0]
    assert alarm["id"] in first.alerts_opened
    assert alarm["severity"] == "critical"  # follows the latest breach: escalated from warning
    assert alarm["detail"]["value"] == 12.5 and alarm["detail"]["limits"] == {"warning_max": 5.0,
                                                                             "critical_max": 9.0}
    status = api.get(f"{API}/equipment/{EQ}/status", headers=VIEWER).json()
    assert status["status"] == "critical" and status["reasons"][0]["sensor"] == "vibration_rms_mm_s"
    rollup = api.get(f"{API}/status", params={"location": "ops-site-a"}, headers=VIEWER).json()
    assert rollup["tree"]["status"] == "critical" and rollup["tree"]["counts"]["critical"] >= 1

    # an operator acknowledges; acknowledging again changes nothing
    r = api.post(f"{API}/alarms/{alarm['id']}/ack", json={"comment": "bearing checked", "actor": "ana"},
                 headers=OPERATOR)
    assert r.status_code == 200 and r.json()["state"] == "active_ack"
    assert api.post(f"{API}/alarms/{alarm['id']}/ack", headers=OPERATOR).json()["acked_by"] == "ana (operator)"
    assert api.post(f"{API}/alarms/{alarm['id']}/ack", headers=VIEWER).status_code == 403

    # back to warning level: severity de-escalates; then three normal readings clear it
    later = base + dt.timedelta(minutes=5)
    _write(stack, _encode(ops_root, EQ, [{**normal[4], "vibration_rms_mm_s": 6.5}], later))
    assert api.get(f"{API}/alarms/{alarm['id']}", headers=VIEWER).json()["severity"] == "warning"
    _write(stack, _encode(ops_root, EQ, normal[:3], later + dt.timedelta(minutes=1)))
    done = api.get(f"{API}/alarms/{alarm['id']}", headers=VIEWER).json()
    assert done["state"] == "cleared_ack", done
    events = [e["event"] for e in done["timeline"]]
    assert events == ["opened", "acknowledged", "severity_changed", "resolved"], events
    assert done["timeline"][1]["comment"] == "bearing checked"
    # status follows the latest reading: no threshold reason now (the model may still flag a row)
    after = api.get(f"{API}/equipment/{EQ}/status", headers=VIEWER).json()
    assert after["status"] != "critical" and all(r["type"] != "threshold" for r in after["reasons"]), after

    # every transition went to the outbox, in order, once
    outbox = [orjson.loads(r["payload"]) for r in q(
        stack, "SELECT payload::text AS payload FROM serve_ml_outbox WHERE topic = $1 ORDER BY id", TOPIC)]
    mine = [e["event"] for e in outbox if e["alert_id"] == alarm["id"]]
    assert mine == events

    # a manual clear while the breach persists: the next breach opens a new alarm
    _write(stack, _encode(ops_root, EQ, [{**normal[5], "vibration_rms_mm_s": 9.5}], later + dt.timedelta(minutes=2)))
    active = api.get(f"{API}/alarms", params={"equipment_id": EQ, "type": "threshold", "state": "active_unack"},
                     headers=VIEWER).json()["alarms"]
    assert len(active) == 1 and active[0]["id"] != alarm["id"]
    cleared = api.post(f"{API}/alarms/{active[0]['id']}/clear", json={"comment": "sensor replaced"},
                       headers=OPERATOR).json()
    assert cleared["state"] == "cleared_unack" and cleared["cleared_by"] == "operator"
    assert api.post(f"{API}/alarms/999999999/clear", headers=OPERATOR).status_code == 404


def test_deleting_a_threshold_clears_the_alarms_it_raised(api: TestClient, stack: Stack, ops_root: Path) -> None:
    api.put(f"{API}/equipment/{EQ}", json={"type": "ops-press", "location": "ops-site-a/hall-1"}, headers=OPERATOR)
    api.put(f"{API}/thresholds", json={"scope": "equipment", "target": EQ, "sensor": "air_temp_k",
                                       "critical_min": 400.0, "reason": "deliberately impossible"}, headers=OPERATOR)
    _write(stack, _encode(ops_root, EQ, sim_rows("normal", 2, "5.5kW", seed=12), _hour()))
    opened = api.get(f"{API}/alarms", params={"equipment_id": EQ, "type": "threshold", "state": "active_unack"},
                     headers=VIEWER).json()["alarms"]
    assert [a["source"] for a in opened] == ["air_temp_k"]
    r = api.delete(f"{API}/thresholds", params={"scope": "equipment", "target": EQ, "sensor": "air_temp_k",
                                                "reason": "typo"}, headers=OPERATOR)
    assert r.status_code == 200 and r.json()["alarms_cleared"] == [opened[0]["id"]]
    assert api.get(f"{API}/alarms/{opened[0]['id']}", headers=VIEWER).json()["state"] == "cleared_unack"
    hist = api.get(f"{API}/thresholds/history", params={"scope": "equipment", "target": EQ,
                                                         "sensor": "air_temp_k"}, headers=VIEWER).json()["history"]
    assert [h["action"] for h in hist] == ["delete", "set"] and hist[0]["current"] is None
    assert api.delete(f"{API}/thresholds", params={"scope": "equipment", "target": EQ, "sensor": "air_temp_k",
                                                   "reason": "again"}, headers=OPERATOR).status_code == 404


def test_hourly_rollups_are_exact_and_a_replay_counts_nothing(api: TestClient, stack: Stack, ops_root: Path) -> None:
    base = _hour()
    rows = sim_rows("normal", 40, "5.5kW", seed=13)
    first = _encode(ops_root, EQ2, rows[:30], base + dt.timedelta(minutes=59, seconds=40))  # straddles two hours
    again = _encode(ops_root, EQ2, rows[:30], base + dt.timedelta(minutes=59, seconds=40))
    straddle = _encode(ops_root, EQ2, rows[20:40], base + dt.timedelta(minutes=59, seconds=60))
    stats = _write(stack, first, again, straddle)
    assert [s.predictions for s in stats] == [30, 0, 10]
    got = api.get(f"{API}/equipment/{EQ2}/aggregates", params={
        "interval": "1h", "start": base.isoformat(), "end": (base + dt.timedelta(hours=2)).isoformat()},
        headers=VIEWER).json()["buckets"]
    stored = q(stack, "SELECT time, features::text AS f FROM serve_ml_readings WHERE equipment_id = $1 "
                      "AND time >= $2 AND time < $3", EQ2, base, base + dt.timedelta(hours=2))
    assert len(stored) == 40
    for bucket in got:
        start = dt.datetime.fromisoformat(bucket["bucket"])
        values = [orjson.loads(r["f"])["torque_nm"] for r in stored if start <= r["time"] < start + dt.timedelta(hours=1)]
        t = bucket["sensors"]["torque_nm"]
        assert t["count"] == len(values) == bucket["readings"]
        assert t["min"] == min(values) and t["max"] == max(values)
        assert t["avg"] == pytest.approx(sum(values) / len(values))
    assert sum(b["readings"] for b in got) == 40 and len(got) == 2
    # the day view is the hours combined; the compact range names the same day
    day = api.get(f"{API}/equipment/{EQ2}/aggregates", params={"interval": "1d", "range": f"{base:%Y%m%d}"},
                  headers=VIEWER).json()["buckets"]
    assert day and day[0]["readings"] >= got[0]["readings"]
    # the command that rebuilds them from the stored readings gives the same figures
    cli = Path(sys.executable).parent / "serve-ml"
    done = subprocess.run([str(cli), "db", "rebuild-aggregates", "--from", base.isoformat(),
                           "--to", (base + dt.timedelta(hours=2)).isoformat()],
                          env={**os.environ, "DATABASE_URL": stack.database_url}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "rebuilt" in done.stdout, done.stderr
    rebuilt = api.get(f"{API}/equipment/{EQ2}/aggregates", params={
        "interval": "1h", "start": base.isoformat(), "end": (base + dt.timedelta(hours=2)).isoformat()},
        headers=VIEWER).json()["buckets"]
    assert rebuilt == [_approx(b) for b in got]
    bad = api.get(f"{API}/equipment/{EQ2}/aggregates", params={"range": "2026131"}, headers=VIEWER)
    assert bad.status_code == 422 and "yyyyMMdd" in bad.json()["message"]
    assert api.get(f"{API}/equipment/{EQ2}/aggregates", params={"range": "20261301"},
                   headers=VIEWER).status_code == 422


def _approx(bucket: dict) -> dict:
    """A bucket with its averages compared to 1e-9: sums in another order differ in the last bits."""
    return {**bucket, "sensors": {k: {**v, "avg": pytest.approx(v["avg"], rel=1e-9)}
                                  for k, v in bucket["sensors"].items()}}


def test_operations_need_a_database_and_say_so(ops_root: Path) -> None:
    core = LocalCore(ScoringService(ops_root, enable_xgb=False), max_bulk_rows=10,
                     guard=TokenGuard.of(Settings(operator_token="operator-token-0000001")))
    with TestClient(create_api(core, max_request_bytes=1 << 20)) as client:
        r = client.get(f"{API}/status")
        assert r.status_code == 503 and "no database" in r.json()["message"]


def test_the_stream_applies_a_threshold_set_over_the_api_within_seconds(api: TestClient, stack: Stack) -> None:
    """End to end: an operator sets a limit; the running stream scorer (real Kafka)
    picks it up, opens a threshold alarm, publishes it on the alerts topic and marks
    the equipment critical; deleting the limit clears the alarm."""
    limit = {"scope": "equipment", "target": "press-02", "sensor": "process_temp_k", "critical_max": 305.0,
             "reason": "stream test: normal readings breach it"}
    assert api.put(f"{API}/thresholds", json=limit, headers=OPERATOR).status_code == 200
    try:
        deadline, alarm, k = time.monotonic() + 60, None, 0
        while alarm is None:
            assert time.monotonic() < deadline, "no threshold alarm from the stream"
            t0 = now()
            produce_raw(stack, stack.settings.features_topic, [(b"press-02", orjson.dumps({
                "equipment_id": "press-02", "ts": (t0 + dt.timedelta(milliseconds=i)).isoformat(), "power": "7.5kW",
                "features": {"air_temp_k": 300.0, "process_temp_k": 310.0 + 0.01 * k + 0.001 * i}}))
                for i in range(3)])
            k += 1
            time.sleep(1.0)
            found = api.get(f"{API}/alarms", params={"equipment_id": "press-02", "type": "threshold",
                                                     "state": "active_unack"}, headers=VIEWER).json()["alarms"]
            alarm = found[0] if found else None
        assert alarm["source"] == "process_temp_k" and alarm["severity"] == "critical"
        assert alarm["detail"]["limits"] == {"critical_max": 305.0} and alarm["detail"]["value"] > 305
        status = api.get(f"{API}/equipment/press-02/status", headers=VIEWER).json()
        assert status["status"] == "critical"
        assert any(r.get("sensor") == "process_temp_k" and r["level"] == "critical" for r in status["reasons"])
        deadline = time.monotonic() + 30
        while True:
            events = [orjson.loads(r.value) for r in consume_all(stack, stack.settings.alerts_topic, idle_s=1.0)]
            if any(e["alert_id"] == alarm["id"] and e["event"] == "opened" for e in events):
                break
            assert time.monotonic() < deadline, "the opened event was not published"
    finally:
        gone = api.delete(f"{API}/thresholds", params={"scope": "equipment", "target": "press-02",
                                                       "sensor": "process_temp_k", "reason": "test over"},
                          headers=OPERATOR)
    assert gone.status_code == 200 and alarm["id"] in gone.json()["alarms_cleared"]
    assert api.get(f"{API}/alarms/{alarm['id']}", headers=VIEWER).json()["state"] == "cleared_unack"


def test_http_predict_reports_raw_threshold_breaches(api: TestClient) -> None:
    api.put(f"{API}/thresholds", json={"scope": "equipment", "target": EQ2, "sensor": "current_a",
                                       "warning_max": 9.0, "critical_max": 12.0, "reason": "http test"},
            headers=OPERATOR)
    row = {**sim_rows("normal", 1, "5.5kW", seed=51)[0], "current_a": 13.5}
    deadline, got = time.monotonic() + 20, {}
    while "thresholds" not in got:  # the replica follows the thresholds within about a second
        assert time.monotonic() < deadline, got
        got = api.post(f"{API}/predict", json={"equipment_id": EQ2, "power": "5.5kW", "features": row},
                       headers=VIEWER).json()
        time.sleep(0.2)
    assert got["thresholds"][0] | {"limits": None} == {
        "sensor": "current_a", "level": "critical", "value": 13.5, "limits": None, "scope": "equipment", "target": EQ2}
    ok = {**row, "current_a": 8.0}
    bulk = api.post(f"{API}/predict/bulk", json={"readings": [
        {"equipment_id": EQ2, "power": "5.5kW", "features": ok},
        {"equipment_id": EQ2, "power": "5.5kW", "features": {**row, "current_a": 10.0}}]}, headers=VIEWER).json()
    assert [(b["index"], b["level"]) for b in bulk["thresholds"]] == [(1, "warning")]
    assert api.post(f"{API}/predict", json={"equipment_id": EQ2, "power": "5.5kW", "features": ok},
                    headers=VIEWER).json()["thresholds"] == []
    api.delete(f"{API}/thresholds", params={"scope": "equipment", "target": EQ2, "sensor": "current_a",
                                            "reason": "http test over"}, headers=OPERATOR)
