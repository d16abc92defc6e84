"""start_cluster returns only once the proxy routes the API: the readiness wait."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serve_ml.core.http import API_PREFIX
from serve_ml.core.ports import free_port
from serve_ml.deployments.launch import wait_http_ready


class _Proxy:
    """Answers 404 (a proxy that has not learnt the route yet) ``not_routed`` times, then 200."""

    def __init__(self, not_routed: int) -> None:
        self.paths: list[str] = []
        me = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                me.paths.append(self.path)
                self.send_response(404 if len(me.paths) <= not_routed else 200)
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
    wait_http_ready(late_proxy.url, timeout_s=10)
    assert late_proxy.paths == [f"{API_PREFIX}/health/ready"] * 4


def test_times_out_naming_the_last_answer(late_proxy: _Proxy) -> None:
    with pytest.raises(TimeoutError, match="last: HTTP 404"):
        wait_http_ready(late_proxy.url, timeout_s=0.5)


def test_a_closed_port_times_out_naming_the_refusal() -> None:
    with pytest.raises(TimeoutError, match="last: ConnectError"):
        wait_http_ready(f"http://127.0.0.1:{free_port()}", timeout_s=0.5)
