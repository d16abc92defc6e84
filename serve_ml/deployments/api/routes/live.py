"""WebSocket streams: one equipment's verdicts, status and alarms; or alarm
transitions, filterable by location and severity.

Auth is the HTTP API's: the read token (when one is set) in an ``Authorization:
Bearer`` header, or as the first message ``{"token": "..."}`` for clients that
cannot set headers (browsers). Close codes: 4401 no or wrong token, 4008 too slow
(the queue stayed full), 4429 too many connections from one client, 1013 this
server holds all the sockets it may (try again later), 1011 no database configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from serve_ml.core.errors import InvalidQuery, ServeMLError
from serve_ml.deployments.api.routes.equipment import parse_location
from serve_ml.deployments.auth import TokenGuard
from serve_ml.deployments.edge import PREFIX
from serve_ml.deployments.live import LiveHub, Subscriber
from serve_ml.operations.alarm_store import SEVERITY_RANK

router = APIRouter(prefix=PREFIX)
log = logging.getLogger(__name__)
WS_PREFIX = f"{PREFIX}/ws"
AUTH_WAIT_S = 5.0
PING_S = 20.0
PING = '{"type":"ping"}'


@router.websocket("/ws/equipment/{equipment_id}")
async def ws_equipment(ws: WebSocket, equipment_id: str) -> None:
    """Each stored batch's verdicts for the equipment (per 50 ms of event time the
    highest-scoring one, and the newest), its status and reasons, and its alarm
    transitions."""
    await _session(ws, Subscriber(_client(ws), equipment_id=equipment_id))


@router.websocket("/ws/alarms")
async def ws_alarms(ws: WebSocket) -> None:
    """Alarm transitions (opened, severity_changed, acknowledged, cleared, resolved);
    ``?location=site-a/hall-1`` and ``?min_severity=major`` filter them."""
    try:
        location = parse_location(ws.query_params.get("location"))
        severity = ws.query_params.get("min_severity")
        if severity is not None and severity not in SEVERITY_RANK:
            raise InvalidQuery(f"min_severity {severity!r}: one of {', '.join(SEVERITY_RANK)}")
    except InvalidQuery as exc:
        await ws.accept()
        await ws.close(code=1008, reason=exc.message[:120])
        return
    await _session(ws, Subscriber(_client(ws), location=location or None, min_severity=severity))


def gateway_router() -> APIRouter:
    """The same streams at paths relative to :data:`WS_PREFIX`, for the application
    Serve mounts there (``deployments.live_gateway``)."""
    relative = APIRouter()
    for route in router.routes:
        relative.add_api_websocket_route(route.path.removeprefix(WS_PREFIX), route.endpoint)  # type: ignore[attr-defined]
    return relative


def _client(ws: WebSocket) -> str:
    return ws.client.host if ws.client else "unknown"


async def _session(ws: WebSocket, sub: Subscriber) -> None:
    core = ws.app.state.core
    hub = core.live
    await ws.accept()
    # Taken first and held until the socket ends, the token wait included: under Serve
    # a refused socket frees its request slot at once, and a burst cannot overshoot.
    if not hub.take_slot():
        await ws.close(code=1013, reason=f"try again later: this server holds at most {hub.max_connections} sockets")
        return
    try:
        await _admitted(ws, sub, core)
    finally:
        hub.release_slot()


async def _admitted(ws: WebSocket, sub: Subscriber, core: Any) -> None:
    hub: LiveHub = core.live
    if not await _authorised(ws, core.guard):
        await ws.close(code=4401, reason="unauthorized")
        return
    if not hub.admit(sub.client):
        await ws.close(code=4429, reason=f"too many connections from this client (limit {hub.max_per_client})")
        return
    try:
        await hub.subscribe(sub)
    except (RuntimeError, TimeoutError, OSError) as exc:
        hub.unsubscribe(sub)
        await ws.close(code=1011, reason=str(exc)[:120] or "live updates unavailable")
        return
    try:
        await ws.send_text(orjson.dumps({"type": "subscribed", "equipment_id": sub.equipment_id,
                                         "location": "/".join(sub.location or ()) or None,
                                         "min_severity": sub.min_severity}).decode())
        sender = asyncio.create_task(_send(ws, sub))
        reader = asyncio.create_task(_drain(ws))
        slow = asyncio.create_task(sub.too_slow.wait())
        done, pending = await asyncio.wait({sender, reader, slow}, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        for t in done:  # a task's failure is this session's end: say why, once
            failure = t.exception()
            if failure is not None:
                log.warning("WebSocket session for %s ended: %r", sub.client, failure)
        if slow in done:
            with contextlib.suppress(Exception):
                await ws.close(code=4008, reason=f"too slow: {sub.dropped} messages dropped")
    except WebSocketDisconnect:
        pass
    finally:
        hub.unsubscribe(sub)


async def _send(ws: WebSocket, sub: Subscriber) -> None:
    """Until the client goes away (a send to a closed socket ends it, quietly). This
    runs once per message and client, so it arms no timer per message: a task of
    its own queues the idle ping."""
    loop = asyncio.get_running_loop()
    sub.sent_at = loop.time()
    pinger = asyncio.create_task(_ping_when_idle(sub))
    try:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await ws.send_text(await sub.queue.get())
                sub.sent_at = loop.time()
    finally:
        pinger.cancel()


async def _ping_when_idle(sub: Subscriber) -> None:
    """A ping after ``PING_S`` with nothing sent, which keeps proxies from closing an
    idle socket."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(max(PING_S / 20, sub.sent_at + PING_S - loop.time()))
        if loop.time() - sub.sent_at >= PING_S and sub.queue.empty():
            sub.queue.put_nowait(PING)


async def _drain(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it goes away."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await ws.receive_text()


async def _authorised(ws: WebSocket, guard: TokenGuard) -> bool:
    header = ws.headers.get("authorization")
    try:
        guard.read(header)
        return True
    except ServeMLError:
        if header:
            return False
    try:
        first = await asyncio.wait_for(ws.receive_text(), AUTH_WAIT_S)
        token = orjson.loads(first).get("token")
        guard.read(f"Bearer {token}" if isinstance(token, str) else None)
        return True
    except (TimeoutError, ServeMLError, orjson.JSONDecodeError, AttributeError, WebSocketDisconnect):
        return False
