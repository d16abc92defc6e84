"""Ports for the project's servers come from below the kernel's ephemeral range, so an
outgoing connection can never be holding one when its server binds it."""

from __future__ import annotations

import socket

from serve_ml.core.ports import _ephemeral_range, free_port


def test_free_ports_are_bindable_and_never_ephemeral() -> None:
    low, _ = _ephemeral_range()
    ports = {free_port() for _ in range(50)}
    assert all(p < low for p in ports)
    assert len(ports) > 40  # random, so two servers started together rarely pick the same one
    for port in list(ports)[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
