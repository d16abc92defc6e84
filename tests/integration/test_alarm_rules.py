"""Alarm rules against the real database: N of the last M readings across batches,
a minimum duration, a clear margin (hysteresis), which rule applies, the API's
history and its refusals."""

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

TOPIC = "rules-test.alerts"
LIMIT = 100.0  # current_a's warning_max; the simulator's current stays under 10 A


@pytest.fixture(scope="module")
def api(stack: Stack, ops_root: Path) -> Iterator[TestClient]:
    with opskit.ops_api(stack, ops_root, TOPIC) as client:
        yield client


def _rows(currents: list[float | None], seed: int) -> list[dict[str, float]]:
    """Simulated readings with current_a replaced where a value is given."""
    rows = sim_rows("normal", len(currents), "5.5kW", seed=seed)
    return [r | ({"current_a": c} if c is not None else {}) for r, c in zip(rows, currents, strict=True)]


def _threshold_alarms(api: TestClient, eq: str) -> list[dict]:
    return api.get(f"{API}/alarms", params={"equipment_id": eq, "type": "threshold"}, headers=VIEWER).json()["alarms"]


def _set(api: TestClient, body: dict) -> dict:
    r = api.put(f"{API}/alarm-rules", json={"reason": "test", **body}, headers=OPERATOR)
    assert r.status_code == 200, r.text
    return r.json()


def test_n_of_m_raises_across_batches_and_the_margin_delays_the_clear(
        api: TestClient, stack: Stack, ops_root: Path) -> None:
    eq, hi = "rules-1", 2 * LIMIT
    api.put(f"{API}/equipment/{eq}", json={"type": "rules-press", "location": "rules-site/hall-1"}, headers=OPERATOR)
    api.put(f"{API}/thresholds", json={"scope": "equipment", "target": eq, "sensor": "current_a",
                                       "warning_max": LIMIT, "reason": "rules test"}, headers=OPERATOR)
    try:
        _set(api, {"scope": "type", "target": "rules-press", "kind": "threshold", "raise_count": 3,
                   "raise_window": 5, "clear_after": 2, "clear_margin_pct": 10})
        applied = api.get(f"{API}/equipment/{eq}/alarm-rules", headers=VIEWER).json()["rules"]
        assert applied["threshold"]["scope"] == "type" and applied["threshold"]["rule"]["raise_count"] == 3
        assert applied["anomaly"]["scope"] is None and applied["anomaly"]["rule"]["raise_count"] == 1

        hour = opskit.fresh_hour()
        # two breaches at the end of one batch: 2 of the last 5, no alarm yet
        opskit.write(stack, opskit.encode(ops_root, eq, _rows([None, None, None, hi, hi], 71), hour),
                     alerts_topic=TOPIC)
        assert _threshold_alarms(api, eq) == []
        # one more at the start of the next: 3 of the last 5, counted across the two batches
        second = hour + dt.timedelta(seconds=5)
        opskit.write(stack, opskit.encode(ops_root, eq, _rows([hi, None], 72), second), alerts_topic=TOPIC)
        [alarm] = _threshold_alarms(api, eq)
        assert dt.datetime.fromisoformat(alarm["opened_at"]) == second and alarm["state"] == "active_unack"
        # 95 A is under the limit but inside the 10 % margin: held, not counted toward the clear
        third = hour + dt.timedelta(seconds=10)
        opskit.write(stack, opskit.encode(ops_root, eq, _rows([0.95 * LIMIT, 0.95 * LIMIT, None, None, None], 73),
                                          third), alerts_topic=TOPIC)
        [cleared] = _threshold_alarms(api, eq)
        assert cleared["state"] == "cleared_unack"
        assert dt.datetime.fromisoformat(cleared["cleared_at"]) == third + dt.timedelta(seconds=3)

        # a second change is versioned, with the previous rule in the history
        _set(api, {"scope": "type", "target": "rules-press", "kind": "threshold", "raise_count": 1,
                   "raise_window": 1, "min_duration_s": 0.5})
        history = api.get(f"{API}/alarm-rules/history", params={"scope": "type", "target": "rules-press"},
                          headers=VIEWER).json()["history"]
        assert [h["version"] for h in history][:2] == [2, 1]
        assert history[0]["previous"]["rule"]["raise_count"] == 3 and history[0]["current"]["min_duration_s"] == 0.5
    finally:
        api.delete(f"{API}/alarm-rules", params={"scope": "type", "target": "rules-press", "kind": "threshold",
                                                 "reason": "test over"}, headers=OPERATOR)
        api.delete(f"{API}/thresholds", params={"scope": "equipment", "target": eq, "sensor": "current_a",
                                                "reason": "test over"}, headers=OPERATOR)


def test_minimum_duration_waits_for_the_condition_to_hold_across_batches(
        api: TestClient, stack: Stack, ops_root: Path) -> None:
    eq, hi = "rules-2", 3 * LIMIT
    api.put(f"{API}/equipment/{eq}", json={"location": "rules-site-2/hall-1"}, headers=OPERATOR)
    api.put(f"{API}/thresholds", json={"scope": "equipment", "target": eq, "sensor": "current_a",
                                       "critical_max": LIMIT, "reason": "rules test"}, headers=OPERATOR)
    try:
        _set(api, {"scope": "location", "target": "rules-site-2", "kind": "*", "min_duration_s": 3})
        hour = opskit.fresh_hour()
        opskit.write(stack, opskit.encode(ops_root, eq, _rows([hi, hi, hi], 74), hour), alerts_topic=TOPIC)
        assert _threshold_alarms(api, eq) == []  # held for 2 s
        opskit.write(stack, opskit.encode(ops_root, eq, _rows([hi, hi], 75), hour + dt.timedelta(seconds=3)),
                     alerts_topic=TOPIC)
        [alarm] = _threshold_alarms(api, eq)
        assert dt.datetime.fromisoformat(alarm["opened_at"]) == hour + dt.timedelta(seconds=3)
        assert alarm["severity"] == "critical"
    finally:
        api.delete(f"{API}/alarm-rules", params={"scope": "location", "target": "rules-site-2", "kind": "*",
                                                 "reason": "test over"}, headers=OPERATOR)
        api.delete(f"{API}/thresholds", params={"scope": "equipment", "target": eq, "sensor": "current_a",
                                                "reason": "test over"}, headers=OPERATOR)


def test_rules_are_refused_with_the_reason_and_need_the_operator(api: TestClient) -> None:
    body = {"scope": "equipment", "target": "rules-x", "kind": "anomaly", "reason": "x"}
    bad = api.put(f"{API}/alarm-rules", json=body | {"raise_count": 4, "raise_window": 2}, headers=OPERATOR)
    assert bad.status_code == 422 and "raise_count (4) must not exceed raise_window (2)" in bad.json()["message"]
    unknown = api.put(f"{API}/alarm-rules", json=body | {"kind": "weather"}, headers=OPERATOR)
    assert unknown.status_code == 422 and "kind" in unknown.json()["message"]
    assert api.put(f"{API}/alarm-rules", json=body, headers=VIEWER).status_code == 403
    missing = api.delete(f"{API}/alarm-rules", params={"scope": "equipment", "target": "rules-x", "kind": "rul",
                                                       "reason": "x"}, headers=OPERATOR)
    assert missing.status_code == 404 and "no equipment alarm rule for 'rul' alarms of 'rules-x'" in missing.text
