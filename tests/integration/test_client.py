"""The Python client against a real server and database: a live subscription sees
the stream writer's batch and its alarm, and the alarm is listed and acknowledged
through the client, blocking and asyncio alike."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve_ml.client import ApiError, AsyncClient, Client
from serve_ml.pipelines.stack import Stack
from tests import opskit
from tests.opskit import OPERATOR_TOKEN, VIEWER_TOKEN, fresh_hour
from tests.samples import sim_rows

EQ = "client-1"
TOPIC = "client-test.alerts"


@pytest.fixture(scope="module")
def server(stack: Stack, ops_root: Path) -> Iterator[str]:
    with opskit.ops_server(stack, ops_root, TOPIC) as address:
        yield address


def test_subscribe_list_and_acknowledge_through_the_client(server: str, stack: Stack, ops_root: Path) -> None:
    url = f"http://{server}"
    operator = Client(url, token=OPERATOR_TOKEN)
    operator.http.put(f"{opskit.API}/thresholds", json={
        "scope": "equipment", "target": EQ, "sensor": "current_a", "critical_max": 1000.0, "reason": "client test"},
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}).raise_for_status()

    async def scenario() -> dict:
        async with AsyncClient(url, token=VIEWER_TOKEN) as viewer:
            live = viewer.subscribe(EQ)
            assert (await asyncio.wait_for(anext(live), 15))["type"] == "subscribed"
            rows = sim_rows("normal", 6, "5.5kW", seed=43)
            rows[-1] = {**rows[-1], "current_a": 2000.0}
            await asyncio.to_thread(opskit.write, stack, opskit.encode(ops_root, EQ, rows, fresh_hour()),
                                    alerts_topic=TOPIC)

            async def verdicts() -> dict:
                async for message in live:
                    if message["type"] == "verdicts":
                        return message
                raise AssertionError("the subscription ended")
            message = await asyncio.wait_for(verdicts(), 15)
            await live.aclose()
            assert message["n"] == 6 and message["status"] == "critical"
            active = await viewer.alarms(equipment_id=EQ, state="active_unack")
            assert active, "the critical reading opened no alarm"
            with pytest.raises(ApiError) as refused:  # a viewer cannot acknowledge
                await viewer.ack(active[0]["id"])
            assert refused.value.status_code == 403
            return active[0]
    try:
        alarm = asyncio.run(scenario())
        acked = operator.ack(alarm["id"], comment="on it", actor="ana")
        assert acked["state"] == "active_ack"
        timeline = Client(url, token=VIEWER_TOKEN).alarm(alarm["id"])
        assert any(e.get("comment") == "on it" for e in timeline["timeline"]), timeline
    finally:
        operator.http.delete(f"{opskit.API}/thresholds", params={
            "scope": "equipment", "target": EQ, "sensor": "current_a", "reason": "client test over"},
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
        operator.close()
