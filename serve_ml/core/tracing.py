"""Tracing and structured logs, one set-up per process.

With ``SERVE_ML_OTLP_ENDPOINT`` set, each process (the launcher, every ingress and
equipment replica, every stream scorer) exports OpenTelemetry spans over OTLP/HTTP to
``<endpoint>/v1/traces``: a span per HTTP request at the edge (continuing the
caller's W3C ``traceparent``, and answering with the server's own), a child span in
the equipment replica a request is sent on to, a span per stream batch. Unset, the
OpenTelemetry API's no-op tracer is used and nothing is built per request.

``SERVE_ML_LOG_FORMAT=json`` makes every log line one JSON object carrying the trace
and span ids of the span it was written in.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_lock = threading.Lock()
_configured: list[str] = []


def configure_tracing(service: str, endpoint: str | None) -> bool:
    """Export this process's spans to ``endpoint`` (once per process); False when
    tracing is off."""
    if not endpoint:
        return False
    with _lock:
        if _configured:
            return True
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces"), schedule_delay_millis=500))
        trace.set_tracer_provider(provider)
        _configured.append(service)
        return True


def flush_tracing(timeout_s: float = 5.0) -> None:
    """Send what is buffered (before a process exits, and in tests)."""
    provider = trace.get_tracer_provider()
    if hasattr(provider, "force_flush"):
        provider.force_flush(int(timeout_s * 1000))


def tracer() -> trace.Tracer:
    return trace.get_tracer("serve_ml")


def inject() -> dict[str, str]:
    """The current span as W3C headers, to hand to another process."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


@contextmanager
def span_from(carrier: Mapping[str, str] | None, name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span continuing the trace in ``carrier`` (W3C headers), or a new trace."""
    parent = _PROPAGATOR.extract(dict(carrier)) if carrier else None
    token = context.attach(parent) if parent is not None else None
    try:
        with tracer().start_as_current_span(name, attributes=attributes) as span:
            yield span
    finally:
        if token is not None:
            context.detach(token)


def traceparent(span: trace.Span) -> str | None:
    """The W3C ``traceparent`` of ``span`` (None for a no-op span)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the current trace and
    span ids (when a span is recording), and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
                               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"], out["span_id"] = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(fmt: str) -> None:
    """``json``: every handler of the root logger (and a stderr one if it has none)
    writes JSON lines; ``text`` leaves logging as it is."""
    if fmt != "json":
        return
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
