"""The HTTP edge in front of the API's routes: what is decided before a route runs.

Pure ASGI (Starlette's BaseHTTPMiddleware costs a task per request): the body size
limit (413), the token a path needs, checked before a byte of the body is read, the
request metrics labelled by route template, and the health-answer cache the routes
share. Errors it answers itself have the project's error body.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Literal, TypeVar

import orjson

from serve_ml.core.errors import PayloadTooLarge, ServeMLError
from serve_ml.core.http import API_PREFIX
from serve_ml.core.tracing import span_from, traceparent
from serve_ml.deployments.auth import Principal, TokenGuard
from serve_ml.deployments.ratelimit import RateLimited, RateLimiter
from serve_ml.operations.audit import AuditEntry
from serve_ml.scoring.metrics import Metrics

log = logging.getLogger("serve_ml.edge")
PREFIX = API_PREFIX
V2_PREFIX = "/v2"
"""Open Inference Protocol v2 routes: errors there have the protocol's body."""


def v2_error_body(body: dict[str, Any]) -> dict[str, Any]:
    """The project's error body in the protocol's shape: ``error`` is the message
    (V2 clients show that string); the error's name moves to ``code``."""
    out = {"error": body.get("message", body.get("error", "")), "code": body.get("error")}
    if "detail" in body:
        out["detail"] = body["detail"]
    return out


HEALTH_CACHE_S = 1.0
T = TypeVar("T")


class Cached(Generic[T]):
    """The answer of ``fn`` for ``ttl_s``, one call in flight at a time: health checks
    ask the cluster (every replica, every actor), and anonymous callers must not be
    able to turn their request rate into cluster calls."""

    def __init__(self, fn: Callable[[], Awaitable[T]], ttl_s: float) -> None:
        self.fn = fn
        self.ttl_s = ttl_s
        self._value: tuple[float, T] | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> T:
        if self._value is not None and time.monotonic() - self._value[0] < self.ttl_s:
            return self._value[1]
        async with self._lock:
            if self._value is None or time.monotonic() - self._value[0] >= self.ttl_s:
                self._value = (time.monotonic(), await self.fn())
            return self._value[1]


OPERATOR_METHODS = frozenset({"PUT", "PATCH", "DELETE"})


def is_scoring(path: str, method: str) -> bool:
    """The requests a rate limit counts: scoring, on either protocol."""
    return method == "POST" and (path.startswith(f"{PREFIX}/predict") or (
        path.startswith(f"{V2_PREFIX}/models/") and path.endswith("/infer")))


def gate(path: str, method: str) -> Literal["admin", "operator", "read", None]:
    """Which token a path needs, decided before its body is read (the routes check
    again with the same guard)."""
    if path.startswith(f"{V2_PREFIX}/"):
        return None if path.startswith(f"{V2_PREFIX}/health/") else "read"
    if (not path.startswith(PREFIX) or path.startswith(f"{PREFIX}/health/")
            or path in (f"{PREFIX}/stream/health", f"{PREFIX}/whoami")):
        return None
    if path == f"{PREFIX}/audit" or path == f"{PREFIX}/train" or path.startswith(f"{PREFIX}/train/"):
        return "admin"
    if method == "POST" and (path in (f"{PREFIX}/sync", f"{PREFIX}/bundles/upload")
                             or path.endswith(("/activate", "/rollback", "/unpin"))):
        return "admin"
    if method in OPERATOR_METHODS or (method == "POST" and (path.endswith(("/ack", "/clear", "/end"))
                                                          or path == f"{PREFIX}/maintenance")):
        return "operator"
    return "read"


# nginx's convention for "client closed the request before the answer"
CLIENT_CLOSED = 499


class EdgeMiddleware:
    """Body size limit (413), the token check before the body, per-request metrics.

    The ``endpoint`` label is the matched route's path or template, or ``other``:
    bounded cardinality.
    """

    def __init__(self, app: Any, *, metrics: Metrics, max_bytes: int, routes: frozenset[str],
                 guard: TokenGuard, audit: Callable[[AuditEntry], Awaitable[None]] | None = None,
                 limiter: RateLimiter | None = None, tracing: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.routes = {r for r in routes if "{" not in r}
        # parameterised routes are labelled by their template, never by the ids in them
        self.templates = [(re.compile("^" + "/".join("[^/]+" if seg.startswith("{") else re.escape(seg)
                                                   for seg in r.split("/")) + "$"), r)
                          for r in sorted(routes) if "{" in r]
        self.guard = guard
        self.audit = audit
        self.limiter = limiter
        self.tracing = tracing

    def _template(self, path: str) -> str:
        for pattern, template in self.templates:
            if pattern.match(path):
                return template
        return "other"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]
        path = scope.get("path", "")
        endpoint = path if path in self.routes else self._template(path)
        authorization = None
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                if v.isdigit() and int(v) > self.max_bytes:
                    await _send_413(send, self.max_bytes, v2=path.startswith(f"{V2_PREFIX}/"))
                    self.metrics.request(endpoint, 413, (time.perf_counter() - t0) * 1e3)
                    return
            elif k == b"authorization":
                authorization = v.decode("latin-1")
        # Refused before a byte of the body is read: anonymous callers cannot make
        # the ingress buffer and parse bodies for them.
        method = scope.get("method", "")
        needs = gate(path, method)
        # management and operator actions are audited, refused ones included
        audited = needs in ("admin", "operator") and method != "GET" and self.audit is not None
        principal: Principal | None = None
        if needs is not None:
            try:
                if needs == "admin":
                    principal = self.guard.admin(authorization)
                elif needs == "operator":
                    principal = self.guard.operator(authorization)
                else:
                    self.guard.read(authorization)
            except ServeMLError as exc:
                await _send_error(send, exc, v2=path.startswith(f"{V2_PREFIX}/"))
                self.metrics.request(endpoint, exc.status_code, (time.perf_counter() - t0) * 1e3)
                if audited:
                    try:  # a known bearer without the role: say who tried
                        principal = self.guard.principal(authorization)
                    except ServeMLError:
                        principal = None
                    await self._audit(scope, principal, endpoint, exc.status_code)
                return
        if self.limiter is not None and is_scoring(path, method):
            client = scope.get("client")
            try:
                self.limiter.take(self.limiter.client_key(authorization, client[0] if client else "unknown"))
            except RateLimited as exc:
                await _send_error(send, exc, v2=path.startswith(f"{V2_PREFIX}/"),
                                  headers=[(b"retry-after", str(exc.retry_after_s).encode())])
                self.metrics.request(endpoint, exc.status_code, (time.perf_counter() - t0) * 1e3)
                return
        # Without a content-length (chunked, or Serve's direct ingress) the body is read
        # and counted here: an error raised inside receive() would reach FastAPI's body
        # parser, which reports every read failure as a 422.
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # client went away
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            more = msg.get("more_body", False)
            if size > self.max_bytes:
                await _send_413(send, self.max_bytes, v2=path.startswith(f"{V2_PREFIX}/"))
                self.metrics.request(endpoint, 413, (time.perf_counter() - t0) * 1e3)
                return
        body = b"".join(chunks)
        replay = replaying(body, receive)

        async def capture(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            if self.tracing:
                await self._traced(scope, replay, capture, endpoint, status)
            else:
                await self.app(scope, replay, capture)
        except asyncio.CancelledError:
            if status[0] == 500:  # the client went away before an answer: not a server error
                status[0] = CLIENT_CLOSED
            raise
        finally:
            self.metrics.request(endpoint, status[0], (time.perf_counter() - t0) * 1e3)
            if audited:
                await self._audit(scope, principal, endpoint, status[0])

    async def _traced(self, scope: dict, receive: Any, send: Any, endpoint: str, status: list[int]) -> None:
        """The request as a span continuing the caller's ``traceparent``; the answer
        carries the server span's own ``traceparent`` so the caller can find it."""
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())
                   if k in (b"traceparent", b"tracestate")}
        method = scope.get("method", "")
        with span_from(carrier, f"{method} {endpoint}", **{"http.request.method": method,
                                                          "http.route": endpoint}) as span:
            header = traceparent(span)

            async def with_header(msg: dict) -> None:
                if msg["type"] == "http.response.start" and header is not None:
                    msg = {**msg, "headers": [*msg.get("headers", []), (b"traceparent", header.encode())]}
                await send(msg)

            try:
                await self.app(scope, receive, with_header)
            finally:
                span.set_attribute("http.response.status_code", status[0])

    async def _audit(self, scope: dict, who: Principal | None, endpoint: str, status: int) -> None:
        """One audit row, written after the answer went out; a database that is down
        is logged, never turned into a failed request."""
        assert self.audit is not None
        client = scope.get("client")
        address = client[0] if client else "unknown"
        for k, v in scope.get("headers", ()):
            if k == b"x-forwarded-for":  # recorded beside the peer, not instead of it: it can be forged
                address = f"{v.decode('latin-1')[:60]} via {address}"
        entry = AuditEntry(subject=who.subject if who else "unauthenticated", role=who.role if who else "none",
                           method=scope.get("method", ""), route=endpoint, path=scope.get("path", ""),
                           status=status, client=address, at=dt.datetime.now(dt.UTC))
        try:
            await self.audit(entry)
        except Exception as exc:
            log.warning("audit entry not stored (%s): %s", type(exc).__name__, entry)


def replaying(body: bytes, receive: Any) -> Any:
    """An ASGI ``receive`` that hands over ``body``, already read, as one message, then
    whatever ``receive`` says (a disconnect) for the app further in."""
    replayed = False

    async def replay() -> dict:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_413(send: Any, limit: int, *, v2: bool) -> None:
    await _send_error(send, PayloadTooLarge(f"request body exceeds {limit} bytes"), v2=v2)


async def _send_error(send: Any, exc: ServeMLError, *, v2: bool = False,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps(v2_error_body(exc.to_dict()) if v2 else exc.to_dict())
    await send({"type": "http.response.start", "status": exc.status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
