"""Tracing and JSON logs: a request to the API continues the caller's W3C trace,
answers with its own traceparent and is exported over OTLP/HTTP to a real receiver;
a span handed across a process boundary (as the ingress does to an equipment
replica) stays in the same trace; log lines carry the ids."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serve_ml.core.settings import Settings
from serve_ml.core.tracing import JsonFormatter, configure_tracing, flush_tracing, inject, span_from, tracer
from serve_ml.deployments.local import create_local_app
from tests.otlpkit import Receiver, start_receiver

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def receiver() -> str:
    """A real OTLP/HTTP receiver, and this process's spans exported to it. It lives as
    long as the process: the tracer provider is global and set once."""
    url, _server = start_receiver()
    assert configure_tracing("serve-ml", url)
    return url


def _exported(name: str, timeout_s: float = 10) -> list:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        flush_tracing()
        found = [(svc, s) for svc, s in Receiver.spans if s.name == name]
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no span {name!r} exported; got {[s.name for _, s in Receiver.spans]}")


def test_a_request_continues_the_callers_trace_and_is_exported(demo_root: Path, receiver: str) -> None:
    c = TestClient(create_local_app(Settings(root=demo_root, otlp_endpoint=receiver)))
    r = c.post("/api/v1/serve-ml/predict", headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
               json={"equipment_id": "pump-03", "power": "5.5kW",
                     "features": {"air_temp_k": 300.0, "process_temp_k": 310.0}})
    assert r.status_code == 200
    version, trace_id, span_id, _flags = r.headers["traceparent"].split("-")
    assert trace_id == CLIENT_TRACE and span_id != CLIENT_SPAN
    # FastAPI exports spans of its own too (same name, dependencies, endpoint): ours is
    # the one the response names
    mine = [x for x in _exported("POST /api/v1/serve-ml/predict") if x[1].span_id.hex() == span_id]
    assert len(mine) == 1, [(svc, s.span_id.hex(), s.parent_span_id.hex()) for svc, s in mine]
    ((service, span),) = mine
    assert service == "serve-ml" and span.trace_id.hex() == CLIENT_TRACE and span.parent_span_id.hex() == CLIENT_SPAN
    attrs = {a.key: (a.value.int_value or a.value.string_value) for a in span.attributes}
    assert attrs["http.response.status_code"] == 200 and attrs["http.route"] == "/api/v1/serve-ml/predict"


def test_a_span_handed_to_another_process_stays_in_its_trace(receiver: str) -> None:
    with tracer().start_as_current_span("ingress.call") as parent:
        carrier = inject()  # what the ingress passes along with an equipment call
    with span_from(carrier, "equipment.score_wire") as child:  # what the replica does with it
        pass
    assert child.get_span_context().trace_id == parent.get_span_context().trace_id
    ((_, exported),) = _exported("equipment.score_wire")
    assert exported.parent_span_id == parent.get_span_context().span_id.to_bytes(8, "big")


def test_json_log_lines_carry_the_trace_and_span_ids(receiver: str) -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("serve_ml.test", logging.WARNING, __file__, 1, "scored %d rows", (3,), None)
    plain = json.loads(formatter.format(record))
    assert plain["message"] == "scored 3 rows" and plain["level"] == "WARNING" and "trace_id" not in plain
    with span_from({"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}, "work"):
        inside = json.loads(formatter.format(record))
    assert inside["trace_id"] == CLIENT_TRACE and len(inside["span_id"]) == 16
