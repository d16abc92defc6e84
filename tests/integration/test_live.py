"""WebSocket pushes, end to end over a real uvicorn server and the real database:
the stream writer's batches and the alarm lifecycle reach subscribed clients on
commit; auth and per-client limits are the API's."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from serve_ml.operations.alarm_store import LIVE_CHANNEL
from serve_ml.operations.live_follows import followed
from serve_ml.pipelines.stack import Stack
from tests import opskit
from tests.opskit import API, OPERATOR, VIEWER_TOKEN, fresh_hour
from tests.samples import sim_rows

EQ = "live-1"
TOPIC = "live-test.alerts"
AUTH = {"Authorization": f"Bearer {VIEWER_TOKEN}"}


@pytest.fixture(scope="module")
def server(stack: Stack, ops_root: Path) -> Iterator[str]:
    with opskit.ops_server(stack, ops_root, TOPIC) as address:
        yield address


async def _next(ws: Any, want: str, timeout_s: float = 15) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        while True:
            msg = json.loads(await ws.recv())
            if msg["type"] == want:
                return msg
    return await asyncio.wait_for(go(), timeout_s)


async def _audience(stack: Stack) -> frozenset[str]:
    """The equipment some hub advertises now."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        return await followed(conn)
    finally:
        await conn.close()


def test_verdicts_status_and_alarm_transitions_are_pushed(server: str, stack: Stack, ops_root: Path) -> None:
    http = httpx.Client(base_url=f"http://{server}{API}", timeout=30)
    assert http.put(f"/equipment/{EQ}", json={"location": "live-site/hall-1"}, headers=OPERATOR).status_code in (200, 201)
    http.put("/thresholds", json={"scope": "equipment", "target": EQ, "sensor": "current_a", "critical_max": 1000.0,
                                  "reason": "live test"}, headers=OPERATOR)

    async def scenario() -> None:
        async with websockets.connect(f"ws://{server}{API}/ws/equipment/{EQ}", additional_headers=AUTH) as eq_ws, \
                websockets.connect(f"ws://{server}{API}/ws/alarms?location=live-site") as al_ws:
            await al_ws.send(json.dumps({"token": VIEWER_TOKEN}))  # a browser's way: token as the first message
            assert (await _next(eq_ws, "subscribed"))["equipment_id"] == EQ
            assert (await _next(al_ws, "subscribed"))["location"] == "live-site"
            rows = sim_rows("normal", 8, "5.5kW", seed=41)
            rows[-1] = {**rows[-1], "current_a": 2000.0}  # the latest reading breaches a critical limit
            await asyncio.to_thread(opskit.write, stack, opskit.encode(ops_root, EQ, rows, fresh_hour()),
                                    alerts_topic=TOPIC)
            # the equipment's stream: its alarm transitions (sent first: they commit in the
            # same transaction, notified before the batch summary) and the batch summary
            alarm_first = await _next(eq_ws, "alarm")
            verdicts = await _next(eq_ws, "verdicts")
            assert verdicts["equipment_id"] == EQ and verdicts["n"] == 8
            assert len(verdicts["points"]["t_ms"]) == 8 and set(verdicts["points"]["modalities"]) == {
                "thermal", "mechanical"}
            assert verdicts["status"] == "critical" and verdicts["last"]["sensors"]["current_a"] == 2000.0
            opened = (await _next(al_ws, "alarm"))["alarm"]
            assert opened["equipment_id"] == EQ and opened["event"] == "opened"
            assert alarm_first["alarm"]["alert_id"] == opened["alert_id"]
            # an acknowledgement over HTTP is pushed as it commits
            await asyncio.to_thread(http.post, f"/alarms/{opened['alert_id']}/ack", json={"actor": "ana"},
                                    headers=OPERATOR)
            while True:
                ack = (await _next(al_ws, "alarm"))["alarm"]
                if ack["alert_id"] == opened["alert_id"] and ack["event"] == "acknowledged":
                    break
            assert ack["actor"] == "ana (operator)" and ack["state"] == "active_ack"
    asyncio.run(scenario())
    http.delete("/thresholds", params={"scope": "equipment", "target": EQ, "sensor": "current_a",
                                       "reason": "live test over"}, headers=OPERATOR)
    http.close()


def test_a_bad_token_and_too_many_connections_are_refused_with_close_codes(server: str) -> None:
    async def scenario() -> None:
        async with websockets.connect(f"ws://{server}{API}/ws/alarms") as ws:
            await ws.send(json.dumps({"token": "wrong-token-00000000000"}))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 4401
        async with websockets.connect(f"ws://{server}{API}/ws/alarms?min_severity=loud", additional_headers=AUTH) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 1008 and "min_severity" in closed.value.rcvd.reason
        held = [await websockets.connect(f"ws://{server}{API}/ws/equipment/{EQ}", additional_headers=AUTH)
                for _ in range(16)]
        try:
            for ws in held:
                await _next(ws, "subscribed")
            async with websockets.connect(f"ws://{server}{API}/ws/equipment/{EQ}", additional_headers=AUTH) as extra:
                with pytest.raises(ConnectionClosed) as closed:
                    await extra.recv()
                assert closed.value.rcvd.code == 4429
        finally:
            for ws in held:
                await ws.close()
    asyncio.run(scenario())


def test_only_followed_equipment_get_live_messages_and_a_closed_client_stops_them(server: str, stack: Stack,
                                                                                 ops_root: Path) -> None:
    # ids no other test follows: the follows table is the whole database's, and a hub of
    # another test may still advertise its own equipment for a moment
    watched, unwatched = "live-2", "live-3"

    async def scenario() -> None:
        notified: list[dict[str, Any]] = []
        listener = await asyncpg.connect(stack.database_url)
        await listener.add_listener(LIVE_CHANNEL, lambda *a: notified.append(json.loads(a[3])))
        try:
            async with websockets.connect(f"ws://{server}{API}/ws/equipment/{watched}", additional_headers=AUTH) as ws:
                await _next(ws, "subscribed")  # sent once the hub has advertised what it follows
                assert watched in await _audience(stack) and unwatched not in await _audience(stack)
                # the unwatched equipment's batch commits first: had it been notified, it
                # would be on the channel before the watched one's
                await asyncio.to_thread(opskit.write, stack,
                                        opskit.encode(ops_root, unwatched, sim_rows("normal", 4, "5.5kW", seed=7),
                                                      fresh_hour()),
                                        opskit.encode(ops_root, watched, sim_rows("normal", 4, "5.5kW", seed=8),
                                                      fresh_hour()), alerts_topic=TOPIC)
                assert (await _next(ws, "verdicts"))["equipment_id"] == watched
                for _ in range(50):
                    if any(m.get("equipment_id") == watched for m in notified):
                        break
                    await asyncio.sleep(0.1)
                assert {m.get("equipment_id") for m in notified if m.get("type") == "verdicts"} == {watched}
            # the client gone, the hub withdraws the equipment within about a second
            for _ in range(50):
                if watched not in await _audience(stack):
                    break
                await asyncio.sleep(0.1)
            assert watched not in await _audience(stack)
        finally:
            await listener.close()
    asyncio.run(scenario())


def test_a_server_shutting_down_withdraws_what_its_clients_followed(stack: Stack, ops_root: Path) -> None:
    """A hub that stops with clients still connected (a replica scaled down or
    redeployed) withdraws their equipment at once; the rows' expiry (30 s) is only for
    a hub that died without a word."""
    eq = "live-4"

    async def scenario() -> None:
        with contextlib.ExitStack() as server:
            address = server.enter_context(opskit.ops_server(stack, ops_root, TOPIC))
            async with websockets.connect(f"ws://{address}{API}/ws/equipment/{eq}", additional_headers=AUTH) as ws:
                await _next(ws, "subscribed")
                assert eq in await _audience(stack)
                await asyncio.to_thread(server.close)  # the client never says goodbye
                assert eq not in await _audience(stack)
    asyncio.run(scenario())
