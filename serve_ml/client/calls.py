"""The API's calls as data, shared by the sync and the async client: each method
builds a :class:`Call` (what to send, whether it may be retried), and a client sends
it. Answers are the server's JSON, as documented in the README and at ``/docs``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import numpy as np

from serve_ml.core.errors import ServeMLError
from serve_ml.core.http import API_PREFIX

Columns = Mapping[str, Any]
"""Feature name -> values: numpy arrays, lists, or a pandas DataFrame (its columns).
A 2-D array per feature (rows x steps) is a window per row, for sequence bundles."""


class ApiError(ServeMLError):
    """The server refused a request: ``status_code``, the error ``type`` it named
    (``EquipmentNotFound``, ``FeatureError``...), its ``message`` and ``detail``."""

    def __init__(self, status_code: int, type_: str, message: str, detail: Any = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"{status_code} {type_}: {message}", detail=detail if isinstance(detail, dict) else None)
        self.status_code = status_code
        self.type = type_
        self.server_message = message
        self.raw_detail = detail
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Call:
    method: Literal["GET", "POST", "PUT", "DELETE"]
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Scoring is a pure function of its input: safe to send again after a dropped
    # connection. A management call is retried only when the server said it did
    # nothing (503 with Retry-After).
    idempotent: bool = False


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait when the server answers 503 or 429 with
    ``Retry-After`` (it refused before doing anything), or a connection drops on
    an idempotent call."""

    attempts: int = 4
    max_wait_s: float = 10.0
    default_wait_s: float = 0.5

    def wait_s(self, attempt: int, retry_after: str | None) -> float:
        try:
            asked = float(retry_after) if retry_after is not None else None
        except ValueError:
            asked = None
        wait = asked if asked is not None else self.default_wait_s * (2 ** (attempt - 1))
        return min(max(wait, 0.0), self.max_wait_s)


RETRY_STATUSES = frozenset({429, 503})


def headers_for(call: Call, token: str | None) -> dict[str, str]:
    return {**call.headers, "Authorization": f"Bearer {token}"} if token else dict(call.headers)


def retry_wait(call: Call, policy: RetryPolicy, attempt: int, *, status: int | None = None,
               retry_after: str | None = None, dropped: bool = False) -> float | None:
    """Seconds to wait before sending ``call`` again after ``attempt`` (1-based), or
    None: give up (raise what happened). A dropped connection is retried only for a
    call that is safe to repeat; 429/503 (the server did nothing) always."""
    if attempt >= policy.attempts:
        return None
    if dropped:
        return policy.wait_s(attempt, None) if call.idempotent else None
    if status in RETRY_STATUSES:
        return policy.wait_s(attempt, retry_after)
    return None


def error_of(status: int, body: bytes, retry_after: str | None) -> ApiError:
    import orjson

    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        return ApiError(status, "HTTPError", body[:300].decode("utf-8", "replace"))
    try:
        after = float(retry_after) if retry_after is not None else None
    except ValueError:
        after = None
    return ApiError(status, str(doc.get("error", "HTTPError")), str(doc.get("message", "")), doc.get("detail"), after)


def _p(*parts: str) -> str:
    return API_PREFIX + "".join("/" + quote(p, safe="") for p in parts)


def _frame_columns(columns: Columns) -> dict[str, np.ndarray]:
    names = list(columns.columns) if hasattr(columns, "columns") and hasattr(columns, "to_numpy") else list(columns)
    return {str(n): np.asarray(columns[n]) for n in names}


def _drop_none(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


class Calls:
    """One method per API call; see the clients for their documentation."""

    @staticmethod
    def predict(equipment_id: str, features: Mapping[str, float], power: str | None,
                model_version: str | None) -> Call:
        return Call("POST", _p("predict"), json=_drop_none(equipment_id=equipment_id, features=dict(features),
                                                          power=power, model_version=model_version),
                    idempotent=True)

    @staticmethod
    def predict_window(equipment_id: str, readings: Sequence[Mapping[str, float]], power: str | None,
                       model_version: str | None) -> Call:
        return Call("POST", _p("predict"), json=_drop_none(equipment_id=equipment_id,
                                                           readings=[dict(r) for r in readings], power=power,
                                                           model_version=model_version), idempotent=True)

    @staticmethod
    def predict_bulk(readings: Sequence[Mapping[str, Any]]) -> Call:
        return Call("POST", _p("predict", "bulk"), json={"readings": [dict(r) for r in readings]}, idempotent=True)

    @staticmethod
    def predict_columns(equipment_id: str, columns: Columns, power: str | None, model_version: str | None,
                        dtype: Literal["float64", "float32"]) -> Call:
        cols = _frame_columns(columns)
        if not cols:
            raise ValueError("no columns to score")
        shapes = {c.shape for c in cols.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) not in (1, 2):
            raise ValueError(f"every column must have the same shape, rows or rows x steps; got {sorted(shapes)}")
        shape = shapes.pop()
        body = np.stack([c.astype("<f4" if dtype == "float32" else "<f8", copy=False) for c in cols.values()])
        params = _drop_none(equipment_id=equipment_id, features=",".join(cols), power=power,
                            model_version=model_version, dtype=dtype, steps=shape[1] if len(shape) == 2 else None)
        return Call("POST", _p("predict", "columns", "binary"), params=params,
                    content=np.ascontiguousarray(body).tobytes(),
                    headers={"Content-Type": "application/octet-stream"}, idempotent=True)

    @staticmethod
    def bundles(equipment_id: str | None, power: str | None) -> Call:
        return Call("GET", _p("bundles"), params=_drop_none(equipment_id=equipment_id, power=power), idempotent=True)

    @staticmethod
    def report(equipment_id: str, power: str, version: str) -> Call:
        return Call("GET", _p("bundles", equipment_id, power, version, "report"), idempotent=True)

    @staticmethod
    def sync() -> Call:
        return Call("POST", _p("sync"))

    @staticmethod
    def upload(archive: bytes) -> Call:
        return Call("POST", _p("bundles", "upload"), content=archive, headers={"Content-Type": "application/gzip"})

    @staticmethod
    def activate(equipment_id: str, power: str, version: str, pin: bool, reason: str) -> Call:
        return Call("POST", _p("bundles", equipment_id, power, "activate"),
                    json={"model_version": version, "pin": pin, "reason": reason})

    @staticmethod
    def rollback(equipment_id: str, power: str, reason: str) -> Call:
        return Call("POST", _p("bundles", equipment_id, power, "rollback"), json={"reason": reason})

    @staticmethod
    def unpin(equipment_id: str, power: str, reason: str) -> Call:
        return Call("POST", _p("bundles", equipment_id, power, "unpin"), json={"reason": reason})

    @staticmethod
    def alarms(filters: Mapping[str, Any]) -> Call:
        params = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in filters.items() if v is not None}
        return Call("GET", _p("alarms"), params=params, idempotent=True)

    @staticmethod
    def alarm(alarm_id: int) -> Call:
        return Call("GET", _p("alarms", str(alarm_id)), idempotent=True)

    @staticmethod
    def alarm_action(alarm_id: int, action: Literal["ack", "clear"], comment: str | None, actor: str | None) -> Call:
        # acknowledging or clearing twice changes nothing: safe to send again
        return Call("POST", _p("alarms", str(alarm_id), action), json=_drop_none(comment=comment, actor=actor),
                    idempotent=True)

    @staticmethod
    def status(location: str | None) -> Call:
        return Call("GET", _p("status"), params=_drop_none(location=location), idempotent=True)

    @staticmethod
    def ready() -> Call:
        return Call("GET", _p("health", "ready"), idempotent=True)

    @staticmethod
    def whoami() -> Call:
        return Call("GET", _p("whoami"), idempotent=True)


def ws_path(equipment_id: str | None, location: str | None, min_severity: str | None) -> str:
    """The live WebSocket's path and query: one equipment's stream, or alarm transitions."""
    if equipment_id is not None:
        return _p("ws", "equipment", equipment_id)
    query = "&".join(f"{k}={quote(v, safe='/')}" for k, v in (("location", location), ("min_severity", min_severity))
                     if v is not None)
    return _p("ws", "alarms") + (f"?{query}" if query else "")
