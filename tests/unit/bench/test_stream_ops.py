"""The stream bench's webhook receiver: counts deliveries over kept-alive
connections, and a sender that goes away mid-connection (the bench kills the
notifier between rounds) costs no traceback in the bench's output."""

from __future__ import annotations

import socket
import struct
import time

import httpx
import pytest

from serve_ml.bench.stream_ops import Receiver


def test_deliveries_are_counted_and_a_reset_connection_is_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    receiver = Receiver()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{receiver.port}") as http:
            assert [http.post("/hook", content=b"{}").status_code for _ in range(3)] == [200, 200, 200]
        assert receiver.received == 3
        sock = socket.create_connection(("127.0.0.1", receiver.port))
        sock.sendall(b"POST /hook HTTP/1.1\r\n")  # half a request, then a reset (linger 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        time.sleep(0.2)
        sock.close()
        time.sleep(0.5)
        with httpx.Client(base_url=f"http://127.0.0.1:{receiver.port}") as http:
            assert http.post("/slack", content=b"{}").status_code == 200
        assert receiver.received == 4
    finally:
        receiver.stop()
    assert "Traceback" not in capsys.readouterr().err
