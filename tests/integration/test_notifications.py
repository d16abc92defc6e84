"""Notifications end to end: alarms stored by the stream writer reach a real HTTP
server (signed webhook, Slack-compatible text) and a real SMTP server through the
stack's notifier actor, routed by severity, type and location; a failing sink is
retried with backoff, raises a pipeline-fault alarm, and does not hold up the
others. The sinks are configured in ``tests/fixtures.py`` (``notifications_yaml``)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from fastapi.testclient import TestClient

from serve_ml.pipelines.stack import Stack
from tests import opskit
from tests.fixtures import NOTIFY_SECRET, Receivers
from tests.opskit import API, OPERATOR, VIEWER, fresh_hour
from tests.samples import sim_rows

TOPIC = "notify-test.alerts"
T = TypeVar("T")


@pytest.fixture(scope="module")
def api(stack: Stack, ops_root: Path) -> Iterator[TestClient]:
    with opskit.ops_api(stack, ops_root, TOPIC) as client:
        yield client


def _until(what: str, get: Callable[[], T], timeout_s: float = 30) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        got = get()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _breach(api: TestClient, stack: Stack, root: Path, eq: str, location: str, value: float) -> dict[str, Any]:
    """Register ``eq`` at ``location``, give it a vibration limit, store a reading over
    it; return the threshold alarm that opened."""
    assert api.put(f"{API}/equipment/{eq}", json={"location": location}, headers=OPERATOR).status_code in (200, 201)
    api.put(f"{API}/thresholds", json={"scope": "equipment", "target": eq, "sensor": "vibration_rms_mm_s",
                                       "warning_max": 5.0, "critical_max": 9.0, "reason": "notification test"},
            headers=OPERATOR)
    row = {**sim_rows("normal", 1, "5.5kW", seed=21)[0], "vibration_rms_mm_s": value}
    (stats,) = opskit.write(stack, opskit.encode(root, eq, [row], fresh_hour()), alerts_topic=TOPIC)
    alarms = api.get(f"{API}/alarms", params={"equipment_id": eq, "type": "threshold", "state": "active_unack"},
                     headers=VIEWER).json()["alarms"]
    assert len(alarms) == 1 and alarms[0]["id"] in stats.alerts_opened
    return alarms[0]


def _hooks(receivers: Receivers, path: str, alarm_id: int) -> list[dict[str, Any]]:
    out = []
    for r in list(receivers.requests):
        if r["path"] != path:
            continue
        doc = orjson.loads(r["body"])
        if doc.get("alert_id") == alarm_id or f"[alarm {alarm_id}]" in doc.get("text", ""):
            out.append({**r, "doc": doc})
    return out


def _flaky(api: TestClient) -> list[dict[str, Any]]:
    """The flaky sink's deliveries of notify-2's alarms, oldest first."""
    log = api.get(f"{API}/notifications", params={"sink": "flaky-cmms"}, headers=VIEWER).json()["deliveries"]
    return sorted((d for d in log if d["payload"]["equipment_id"] == "notify-2"), key=lambda d: d["id"])


def test_an_alarm_reaches_webhook_slack_and_email_as_routed(api: TestClient, stack: Stack, ops_root: Path,
                                                            receivers: Receivers) -> None:
    alarm = _breach(api, stack, ops_root, "notify-1", "notify-site-a/hall-1", 12.0)  # critical
    hook = _until("the signed webhook", lambda: _hooks(receivers, "/hook", alarm["id"]))[0]
    assert hook["doc"]["event"] == "opened" and hook["doc"]["equipment_id"] == "notify-1"
    assert hook["doc"]["detail"]["value"] == 12.0
    ts = hook["headers"]["x-serve-ml-timestamp"]
    expected = hmac.new(NOTIFY_SECRET.encode(), ts.encode() + b"." + hook["body"], hashlib.sha256).hexdigest()
    assert hook["headers"]["x-serve-ml-signature"] == f"sha256={expected}"
    assert abs(int(ts) - time.time()) < 120
    slack = _until("the Slack message", lambda: _hooks(receivers, "/slack", alarm["id"]))[0]
    assert slack["doc"]["text"].startswith("[CRITICAL] threshold vibration_rms_mm_s alarm opened on notify-1")
    mail = _until("the email", lambda: [m for m in receivers.mails if f"[alarm {alarm['id']}]" in m["Subject"]])[0]
    assert mail["To"] == "night-shift@factory.test" and "vibration_rms_mm_s = 12" in mail["Subject"]

    # acknowledging is routed to Slack (its events include it) but not to the webhook (default events)
    api.post(f"{API}/alarms/{alarm['id']}/ack", json={"actor": "ana", "comment": "on my way"}, headers=OPERATOR)
    ack = _until("the Slack ack", lambda: [h for h in _hooks(receivers, "/slack", alarm["id"])
                                           if "acknowledged" in h["doc"]["text"]])[0]
    assert "by ana (operator)" in ack["doc"]["text"] and "(on my way)" in ack["doc"]["text"]
    want = {("all-webhook", "opened"), ("site-slack", "opened"), ("critical-mail", "opened"),
            ("site-slack", "acknowledged")}

    def delivered() -> list[dict[str, Any]] | None:
        log = [d for d in api.get(f"{API}/notifications", params={"alarm_id": alarm["id"]},
                                  headers=VIEWER).json()["deliveries"] if d["status"] == "delivered"]
        return log if want <= {(d["sink"], d["event"]) for d in log} else None
    log = _until("every delivery logged", delivered)
    sinks = {(d["sink"], d["event"]) for d in log}
    assert ("all-webhook", "acknowledged") not in sinks
    assert all(d["attempts"] == 1 and d["attempt_log"][0]["ok"] for d in log)


def test_a_failing_sink_is_retried_raises_a_pipeline_fault_and_blocks_nobody(
        api: TestClient, stack: Stack, ops_root: Path, receivers: Receivers) -> None:
    receivers.failing.add("/flaky")
    try:
        alarm = _breach(api, stack, ops_root, "notify-2", "notify-site-b", 7.0)  # warning
        # the other sink got it at once
        _until("the webhook", lambda: _hooks(receivers, "/hook", alarm["id"]))
        # the flaky one is tried again and again, then reported as a pipeline fault
        fault = _until("a pipeline-fault alarm", lambda: api.get(f"{API}/alarms", params={
            "equipment_id": "serve-ml", "type": "pipeline_fault", "state": "active_unack"},
            headers=VIEWER).json()["alarms"])
        assert [f["source"] for f in fault] == ["sink:flaky-cmms"]
        assert "HTTP 500" in fault[0]["detail"]["error"]
        # (the reading also tripped the model: its anomaly alarm is first in the sink's queue)
        queue = _flaky(api)
        assert queue[0]["status"] == "pending" and queue[0]["attempts"] >= 3
        assert all(not a["ok"] and "HTTP 500" in a["error"] for a in queue[0]["attempt_log"])
        assert alarm["id"] in {d["alarm_id"] for d in queue}
    finally:
        receivers.failing.discard("/flaky")
    # the receiver recovers: the deliveries go through, in the order of the events, and the fault clears
    done = _until("the retried deliveries", lambda: (q := _flaky(api)) and all(
        d["status"] == "delivered" for d in q) and q)
    assert [d["id"] for d in sorted(done, key=lambda d: d["delivered_at"])] == [d["id"] for d in done]
    cleared = _until("the fault to clear", lambda: api.get(f"{API}/alarms/{fault[0]['id']}", headers=VIEWER)
                     .json()["state"].startswith("cleared") or None)
    assert cleared
