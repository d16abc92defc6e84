"""The live hub's fan-out without a database: filters, coalescing, slow clients."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import pytest
from fastapi import WebSocketDisconnect

from serve_ml.deployments.live import LiveHub, Subscriber


def _alarm(eq: str, severity: str) -> str:
    return json.dumps({"type": "alarm", "alarm": {"equipment_id": eq, "severity": severity, "event": "opened"}})


def test_alarm_filters_and_equipment_streams() -> None:
    hub = LiveHub(None)
    hub._locations = {"p1": ("site-a", "hall-1"), "p2": ("site-b",)}
    site_a = Subscriber("c", location=("site-a",))
    major = Subscriber("c", min_severity="major")
    p2 = Subscriber("c", equipment_id="p2")
    for sub in (site_a, major, p2):
        hub._register(sub)
    hub._on_notify(None, 0, "ch", _alarm("p1", "minor"))
    hub._on_notify(None, 0, "ch", _alarm("p2", "critical"))
    hub._on_notify(None, 0, "ch", json.dumps({"type": "verdicts", "equipment_id": "p2", "n": 3}))
    hub._on_notify(None, 0, "ch", "not json")
    assert site_a.queue.qsize() == 1 and major.queue.qsize() == 1 and p2.queue.qsize() == 2
    assert json.loads(major.queue.get_nowait())["alarm"]["equipment_id"] == "p2"


def test_a_full_queue_drops_the_oldest_and_a_client_full_too_long_is_flagged() -> None:
    async def go() -> None:
        hub = LiveHub(None, slow_close_after_s=0.0)
        sub = Subscriber("c", equipment_id="p1", queue=asyncio.Queue(2))
        hub._register(sub)
        for n in range(4):
            hub._on_notify(None, 0, "ch", json.dumps({"type": "verdicts", "equipment_id": "p1", "n": n}))
        assert [json.loads(sub.queue.get_nowait())["n"] for _ in range(2)] == [2, 3]
        assert sub.dropped == 2 and sub.too_slow.is_set() and hub.counts["closed_slow"] == 1
    asyncio.run(go())


def test_connections_per_client_are_counted_and_a_client_gone_leaves_nothing_behind() -> None:
    hub = LiveHub("postgresql://unused", max_per_client=1)
    sub = Subscriber("10.0.0.1", equipment_id="p1")
    alarms = Subscriber("10.0.0.2")
    hub._register(sub)
    hub._register(alarms)
    assert not hub.admit("10.0.0.1") and hub.admit("10.0.0.3")
    hub.unsubscribe(sub)
    hub.unsubscribe(alarms)
    hub.unsubscribe(sub)  # a second unsubscribe (the session's finally after a close) is harmless
    assert hub.admit("10.0.0.1")
    assert not hub._subs and not hub._by_equipment and not hub._alarm_streams and not hub._per_client
    hub._on_notify(None, 0, "ch", json.dumps({"type": "verdicts", "equipment_id": "p1", "n": 1}))
    hub._on_notify(None, 0, "ch", _alarm("p1", "major"))
    assert hub.counts["delivered"] == 0


def test_the_sender_forwards_queued_messages_pings_an_idle_socket_and_ends_when_the_client_goes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from serve_ml.deployments.api.routes import live as route

    monkeypatch.setattr(route, "PING_S", 0.05)

    class Socket:  # records what it is sent; the third send finds the client gone
        def __init__(self) -> None:
            self.sent: list[str] = []

        async def send_text(self, text: str) -> None:
            if len(self.sent) == 2:
                raise WebSocketDisconnect(1001)
            self.sent.append(text)

    async def go() -> list[str]:
        sub = Subscriber("c", equipment_id="p1")
        sub.queue.put_nowait('{"n": 1}')
        ws = Socket()
        await asyncio.wait_for(route._send(cast(Any, ws), sub), 5)  # returns, quietly, once the client is gone
        return ws.sent

    assert asyncio.run(go()) == ['{"n": 1}', '{"type":"ping"}']
