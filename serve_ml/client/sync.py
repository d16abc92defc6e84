"""The blocking client (see the package docstring for an example)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx
import orjson

from serve_ml.client.calls import Call, Calls, Columns, RetryPolicy, error_of, headers_for, retry_wait, ws_path


class Client:
    """serve-ml over HTTP, blocking. ``token`` is the bearer token a call needs (the
    read token for scoring and reads when one is set, operator or admin for changes).
    ``http``: an ``httpx.Client`` to send through (its base URL is used as is)."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, token: str | None = None, timeout_s: float = 30.0,
                 retry: RetryPolicy | None = None, http: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.retry = retry or RetryPolicy()
        self._own = http is None
        self.http = http or httpx.Client(base_url=self.url, timeout=timeout_s)

    def close(self) -> None:
        if self._own:
            self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _send(self, call: Call) -> Any:
        headers = headers_for(call, self.token)
        attempt = 0
        while True:
            attempt += 1
            try:
                r = self.http.request(call.method, call.path, params=call.params or None, json=call.json,
                                      content=call.content, headers=headers)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                wait = retry_wait(call, self.retry, attempt, dropped=True)
                if wait is None:
                    raise
                time.sleep(wait)
                continue
            if r.status_code < 400:
                return orjson.loads(r.content) if r.content else None
            wait = retry_wait(call, self.retry, attempt, status=r.status_code, retry_after=r.headers.get("retry-after"))
            if wait is None:
                raise error_of(r.status_code, r.content, r.headers.get("retry-after"))
            time.sleep(wait)

    # scoring
    def predict(self, equipment_id: str, features: Mapping[str, float], *, power: str | None = None,
                model_version: str | None = None) -> dict[str, Any]:
        """One reading's verdict (power class and version chosen by the server unless given)."""
        return self._send(Calls.predict(equipment_id, features, power, model_version))

    def predict_window(self, equipment_id: str, readings: Sequence[Mapping[str, float]], *,
                       power: str | None = None, model_version: str | None = None) -> dict[str, Any]:
        """The verdict for a window's last reading (``readings`` oldest first): for a
        bundle with sequence modalities, which read its last ``window_steps`` readings."""
        return self._send(Calls.predict_window(equipment_id, readings, power, model_version))

    def predict_bulk(self, readings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Many readings, any equipment: ``{"results": [...], "errors": n}`` in order."""
        return self._send(Calls.predict_bulk(readings))

    def predict_columns(self, equipment_id: str, columns: Columns, *, power: str | None = None,
                        model_version: str | None = None,
                        dtype: Literal["float64", "float32"] = "float64") -> dict[str, Any]:
        """Many readings of one equipment, from numpy arrays or a pandas DataFrame,
        over the binary columnar route (no JSON on the way in): output arrays in row order."""
        return self._send(Calls.predict_columns(equipment_id, columns, power, model_version, dtype))

    # bundles and their management (admin token)
    def bundles(self, equipment_id: str | None = None, power: str | None = None) -> dict[str, Any]:
        return self._send(Calls.bundles(equipment_id, power))

    def report(self, equipment_id: str, power: str, version: str) -> dict[str, Any]:
        return self._send(Calls.report(equipment_id, power, version))

    def sync(self) -> dict[str, Any]:
        return self._send(Calls.sync())

    def upload(self, archive: bytes | Path) -> dict[str, Any]:
        """Install a bundle from a ``.tar.gz`` (bytes or a path), then sync."""
        return self._send(Calls.upload(archive.read_bytes() if isinstance(archive, Path) else archive))

    def activate(self, equipment_id: str, power: str, version: str, *, pin: bool = True,
                 reason: str = "") -> dict[str, Any]:
        return self._send(Calls.activate(equipment_id, power, version, pin, reason))

    def rollback(self, equipment_id: str, power: str, *, reason: str = "") -> dict[str, Any]:
        return self._send(Calls.rollback(equipment_id, power, reason))

    def unpin(self, equipment_id: str, power: str, *, reason: str = "") -> dict[str, Any]:
        return self._send(Calls.unpin(equipment_id, power, reason))

    # operations
    def alarms(self, *, state: str | None = None, severity: str | None = None, type: str | None = None,  # noqa: A002
               equipment_id: str | None = None, location: str | None = None, start: dt.datetime | None = None,
               end: dt.datetime | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        return self._send(Calls.alarms(dict(state=state, severity=severity, type=type, equipment_id=equipment_id,
                                            location=location, start=start, end=end, limit=limit)))["alarms"]

    def alarm(self, alarm_id: int) -> dict[str, Any]:
        return self._send(Calls.alarm(alarm_id))

    def ack(self, alarm_id: int, *, comment: str | None = None, actor: str | None = None) -> dict[str, Any]:
        return self._send(Calls.alarm_action(alarm_id, "ack", comment, actor))

    def clear(self, alarm_id: int, *, comment: str | None = None, actor: str | None = None) -> dict[str, Any]:
        return self._send(Calls.alarm_action(alarm_id, "clear", comment, actor))

    def status(self, location: str | None = None) -> dict[str, Any]:
        return self._send(Calls.status(location))

    def ready(self) -> bool:
        try:
            self._send(Calls.ready())
            return True
        except Exception:
            return False

    def whoami(self) -> dict[str, Any]:
        return self._send(Calls.whoami())

    def subscribe(self, equipment_id: str | None = None, *, location: str | None = None,
                  min_severity: str | None = None) -> Iterator[dict[str, Any]]:
        """Live messages over the WebSocket: one equipment's verdicts, status and
        alarms, or (no equipment) alarm transitions. Keep-alive pings are skipped."""
        from websockets.sync.client import connect

        url = "ws" + self.url[4:] + ws_path(equipment_id, location, min_severity)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        with connect(url, additional_headers=headers) as ws:
            for raw in ws:
                message = orjson.loads(raw)
                if message.get("type") != "ping":
                    yield message
