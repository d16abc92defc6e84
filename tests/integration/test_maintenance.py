"""Maintenance windows against the real database: an alarm that opens inside one is
recorded but suppressed (no outbox event, no notification), it says which window;
outside the window alarms publish as usual."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serve_ml.pipelines.stack import Stack
from tests import opskit
from tests.opskit import API, OPERATOR, VIEWER
from tests.samples import sim_rows
from tests.streamkit import q

EQ = "maint-1"
TOPIC = "maint-test.alerts"


@pytest.fixture(scope="module")
def api(stack: Stack, ops_root: Path) -> Iterator[TestClient]:
    with opskit.ops_api(stack, ops_root, TOPIC) as client:
        yield client


def test_alarms_inside_a_maintenance_window_are_recorded_but_not_published(
        api: TestClient, stack: Stack, ops_root: Path) -> None:
    api.put(f"{API}/equipment/{EQ}", json={"location": "maint-site/hall-1"}, headers=OPERATOR)
    api.put(f"{API}/thresholds", json={"scope": "equipment", "target": EQ, "sensor": "current_a",
                                       "critical_max": 1.0, "reason": "every reading breaches"}, headers=OPERATOR)
    hour = opskit.fresh_hour()
    window = api.post(f"{API}/maintenance", json={
        "scope": "location", "target": "maint-site", "starts_at": hour.isoformat(),
        "ends_at": (hour + dt.timedelta(minutes=30)).isoformat(), "reason": "bearing swap", "actor": "ana"},
        headers=OPERATOR)
    assert window.status_code == 201, window.text
    wid = window.json()["id"]
    rows = sim_rows("normal", 2, "5.5kW", seed=61)
    opskit.write(stack, opskit.encode(ops_root, EQ, rows, hour + dt.timedelta(minutes=1)), alerts_topic=TOPIC)
    inside = api.get(f"{API}/alarms", params={"equipment_id": EQ, "type": "threshold"}, headers=VIEWER).json()["alarms"]
    assert len(inside) == 1 and inside[0]["suppressed_by"] == wid
    assert api.get(f"{API}/alarms/{inside[0]['id']}", headers=VIEWER).json()["timeline"][0]["detail"][
        "suppressed_by"] == wid
    assert not q(stack, "SELECT 1 FROM serve_ml_outbox WHERE payload->>'alert_id' = $1", str(inside[0]["id"]))
    listed = api.get(f"{API}/maintenance", params={"active_at": (hour + dt.timedelta(minutes=5)).isoformat()},
                     headers=VIEWER).json()["windows"]
    assert [(w["id"], w["suppressed_alarms"]) for w in listed] == [(wid, 1)]

    # after the window: the suppressed alarm clears by hysteresis, and a new breach publishes
    api.post(f"{API}/alarms/{inside[0]['id']}/clear", json={"comment": "maintenance over"}, headers=OPERATOR)
    opskit.write(stack, opskit.encode(ops_root, EQ, rows, hour + dt.timedelta(minutes=45)), alerts_topic=TOPIC)
    after = api.get(f"{API}/alarms", params={"equipment_id": EQ, "type": "threshold", "state": "active_unack"},
                    headers=VIEWER).json()["alarms"]
    assert len(after) == 1 and after[0]["suppressed_by"] is None
    assert q(stack, "SELECT 1 FROM serve_ml_outbox WHERE payload->>'alert_id' = $1", str(after[0]["id"]))

    bad = api.post(f"{API}/maintenance", json={"scope": "equipment", "target": EQ, "starts_at": hour.isoformat(),
                                               "ends_at": hour.isoformat(), "reason": "x"}, headers=OPERATOR)
    assert bad.status_code == 422 and "starts_at must be before ends_at" in bad.json()["message"]
    assert api.post(f"{API}/maintenance", json={"scope": "equipment", "target": EQ, "starts_at": hour.isoformat(),
                                                 "ends_at": (hour + dt.timedelta(hours=1)).isoformat(),
                                                 "reason": "x"}, headers=VIEWER).status_code == 403
    api.delete(f"{API}/thresholds", params={"scope": "equipment", "target": EQ, "sensor": "current_a",
                                            "reason": "test over"}, headers=OPERATOR)
