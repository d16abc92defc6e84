"""The data-quality gate on the stream's write path, against the real database: an
out-of-range value, a flatlined sensor and a dropped sensor are kept out of the
model, raise sensor-fault alarms distinct from equipment faults, show in the live
status, and clear once the sensors behave."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from serve_ml.pipelines.quality import SensorScreen
from serve_ml.pipelines.stack import Stack
from tests import opskit
from tests.opskit import API, OPERATOR, VIEWER, fresh_hour
from tests.samples import sim_rows
from tests.streamkit import q

EQ = "quality-1"
TOPIC = "quality-test.alerts"


@pytest.fixture(scope="module")
def api(stack: Stack, ops_root: Path) -> Iterator[TestClient]:
    with opskit.ops_api(stack, ops_root, TOPIC) as client:
        yield client


def _faults(api: TestClient, state: str) -> dict[str, dict]:
    alarms = api.get(f"{API}/alarms", params={"equipment_id": EQ, "type": "sensor_fault", "state": state},
                     headers=VIEWER).json()["alarms"]
    return {a["source"]: a for a in alarms}


def test_faulty_sensors_are_kept_out_of_the_model_and_raise_sensor_faults(
        api: TestClient, stack: Stack, ops_root: Path) -> None:
    r = api.put(f"{API}/thresholds", json={"scope": "equipment", "target": EQ, "sensor": "vibration_rms_mm_s",
                                           "valid_min": 0.0, "valid_max": 50.0, "reason": "transducer range"},
                headers=OPERATOR)
    assert r.status_code == 200, r.text
    screen = SensorScreen(flatline_readings=4)
    screen.book = opskit.book_now(stack)
    rows = sim_rows("normal", 12, "5.5kW", seed=31)
    bad = [dict(r) for r in rows[:6]]
    bad[4]["vibration_rms_mm_s"] = bad[5]["vibration_rms_mm_s"] = 999.0  # out of the physical range
    for r in bad:
        r["torque_nm"] = 40.0  # the same value six times: flatlined from the fourth
    dropped = {k: v for k, v in rows[6].items() if k != "current_a"}  # a dead current sensor
    base = fresh_hour()
    opskit.write(stack, opskit.encode(ops_root, EQ, bad + [dropped], base, screen=screen), alerts_topic=TOPIC)

    stored = {r["time"]: orjson.loads(r["m"]) for r in q(
        stack, "SELECT time, modalities::text AS m FROM serve_ml_predictions WHERE equipment_id = $1 AND time >= $2 "
               "ORDER BY time", EQ, base)}
    mech = [m["mechanical"] for m in stored.values()]
    assert [m["status"] for m in mech[:3]] == ["scored"] * 3
    assert [m["status"] for m in mech[3:6]] == ["sensor_fault"] * 3  # torque flatlined; 999 is no vibration
    assert mech[6] == {"status": "absent", "threshold": mech[6]["threshold"], "missing": ["current_a"]}
    assert all(m["thermal"]["status"] == "scored" for m in stored.values())  # the other modality carries on

    faults = _faults(api, "active_unack")
    assert set(faults) == {"vibration_rms_mm_s", "torque_nm", "current_a"}, faults
    assert faults["vibration_rms_mm_s"]["detail"]["fault"] == "out_of_range"
    assert faults["torque_nm"]["detail"]["fault"] == "flatline"
    assert faults["current_a"]["detail"]["fault"] == "missing"
    # the out-of-range alarm opened as major; later rows of other faults do not change its severity
    assert faults["vibration_rms_mm_s"]["severity"] == "major" and faults["current_a"]["severity"] == "warning"
    status = api.get(f"{API}/equipment/{EQ}/status", headers=VIEWER).json()
    assert {"type": "sensor_fault", "level": "warning", "sensor": "current_a", "fault": "missing"} in status["reasons"]

    # the sensors behave again: three good readings clear every sensor fault
    opskit.write(stack, opskit.encode(ops_root, EQ, rows[7:12], fresh_hour(), screen=screen), alerts_topic=TOPIC)
    assert _faults(api, "active_unack") == {}
    assert set(_faults(api, "cleared_unack")) >= {"vibration_rms_mm_s", "torque_nm", "current_a"}
