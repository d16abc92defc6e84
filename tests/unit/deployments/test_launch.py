"""start_cluster returns only once the proxy routes the API and the WebSocket prefix
(to the live application): the readiness wait."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serve_ml.core.http import API_PREFIX
from serve_ml.core.ports import free_port
from serve_ml.deployments.launch import wait_http_ready
from serve_ml.deployments.live_gateway import LIVE_READY_PATH, LIVE_ROUTE_PREFIX

LIVE_READY = f"{LIVE_ROUTE_PREFIX}{LIVE_READY_PATH}"


class _Proxy:
    """Answers 404 (a proxy that has not learnt the route yet) ``not_routed`` times, then 200."""

    def __init__(self, not_routed: int, routes_live: bool = True) -> None:
        self.paths: list[str] = []
        me = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                me.paths.append(self.path)
                routed = len(me.paths) > not_routed and (routes_live or self.path != LIVE_READY)
                self.send_response(200 if routed else 404)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def late_proxy() -> Iterator[_Proxy]:
    p = _Proxy(not_routed=3)
    yield p
    p.server.shutdown()
    p.server.server_close()


def test_waits_through_404_until_the_route_answers(late_proxy: _Proxy) -> None:
    wait_http_ready(late_proxy.url, timeout_s=10, live_app=True)
    assert late_proxy.paths == [f"{API_PREFIX}/health/ready"] * 4 + [LIVE_READY]


def test_a_single_process_api_is_not_asked_for_the_live_application() -> None:
    proxy = _Proxy(not_routed=0, routes_live=False)
    try:
        wait_http_ready(proxy.url, timeout_s=5)
        assert proxy.paths == [f"{API_PREFIX}/health/ready"]
    finally:
        proxy.server.shutdown()
        proxy.server.server_close()


def test_an_api_without_the_live_route_is_not_ready() -> None:
    proxy = _Proxy(not_routed=0, routes_live=False)
    try:
        with pytest.raises(TimeoutError, match=f"last: HTTP 404 from {proxy.url}{LIVE_READY}"):
            wait_http_ready(proxy.url, timeout_s=0.8, live_app=True)
    finally:
        proxy.server.shutdown()
        proxy.server.server_close()


def test_times_out_naming_the_last_answer(late_proxy: _Proxy) -> None:
    with pytest.raises(TimeoutError, match="last: HTTP 404"):
        wait_http_ready(late_proxy.url, timeout_s=0.5)


def test_a_closed_port_times_out_naming_the_refusal() -> None:
    with pytest.raises(TimeoutError, match="last: ConnectError"):
        wait_http_ready(f"http://127.0.0.1:{free_port()}", timeout_s=0.5)
