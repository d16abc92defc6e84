"""The live application's own API: only the WebSocket routes, at paths relative to
the prefix Serve mounts it at, and the readiness route the launcher waits for."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from serve_ml.deployments.auth import TokenGuard
from serve_ml.deployments.live import LiveHub
from serve_ml.deployments.live_gateway import LIVE_APP_NAME, LIVE_READY_PATH, LiveArgs, create_live_api


@dataclass
class _Core:
    guard: TokenGuard
    live: LiveHub = field(default_factory=lambda: LiveHub(None))


def test_ready_names_the_application_and_counts_its_sockets() -> None:
    client = TestClient(create_live_api(_Core(TokenGuard(None, None))))
    assert client.get(LIVE_READY_PATH).json() == {"application": LIVE_APP_NAME, "connections": 0, "messages": 0,
                                                  "delivered": 0, "dropped": 0, "closed_slow": 0,
                                                  "refused_full": 0}
    assert client.get("/health/ready").status_code == 404  # the HTTP API is the ingress's, not here


def test_streams_answer_at_relative_paths_with_the_api_close_codes() -> None:
    client = TestClient(create_live_api(_Core(TokenGuard(None, "read-token-0001"))))
    with client.websocket_connect("/equipment/press-02") as ws:  # no token: 4401, as on the ingress
        ws.send_text('{"token": "wrong"}')
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 4401
    with client.websocket_connect("/alarms", headers={"authorization": "Bearer read-token-0001"}) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1011 and "no database" in closed.value.reason


def test_args_are_validated() -> None:
    assert LiveArgs.model_validate({}).replicas == 1
    with pytest.raises(ValueError, match="extra"):
        LiveArgs.model_validate({"replica": 2})


def test_a_hub_at_its_limit_closes_a_new_socket_with_1013_before_asking_for_a_token() -> None:
    """As the HTTP ingress's hub is, when the live application is not deployed: a
    refused socket must give its Serve request slot back at once, not after the
    token wait."""
    hub = LiveHub(None, max_connections=1)
    client = TestClient(create_live_api(_Core(TokenGuard(None, "read-token-0001"), hub)))
    with client.websocket_connect("/equipment/press-02") as waiting:  # holds the slot while its token is awaited
        with client.websocket_connect("/equipment/press-02") as ws:
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
        assert closed.value.code == 1013 and "at most 1 sockets" in closed.value.reason
        assert hub.counts["refused_full"] == 1
        waiting.send_text('{"token": "wrong"}')
        with pytest.raises(WebSocketDisconnect) as closed:
            waiting.receive_text()
        assert closed.value.code == 4401
    with client.websocket_connect("/alarms", headers={"authorization": "Bearer read-token-0001"}) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:  # the slot was given back: admitted, then no database
            ws.receive_text()
    assert closed.value.code == 1011 and hub.counts["refused_full"] == 1 and hub._slots == 0
