"""The asyncio client: the same calls as :class:`serve_ml.client.Client`, awaited."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx
import orjson

from serve_ml.client.calls import Call, Calls, Columns, RetryPolicy, error_of, headers_for, retry_wait, ws_path


class AsyncClient:
    """serve-ml over HTTP with asyncio; see :class:`serve_ml.client.Client`."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, token: str | None = None, timeout_s: float = 30.0,
                 retry: RetryPolicy | None = None, http: httpx.AsyncClient | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.retry = retry or RetryPolicy()
        self._own = http is None
        self.http = http or httpx.AsyncClient(base_url=self.url, timeout=timeout_s)

    async def aclose(self) -> None:
        if self._own:
            await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def _send(self, call: Call) -> Any:
        headers = headers_for(call, self.token)
        attempt = 0
        while True:
            attempt += 1
            try:
                r = await self.http.request(call.method, call.path, params=call.params or None, json=call.json,
                                            content=call.content, headers=headers)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                wait = retry_wait(call, self.retry, attempt, dropped=True)
                if wait is None:
                    raise
                await asyncio.sleep(wait)
                continue
            if r.status_code < 400:
                return orjson.loads(r.content) if r.content else None
            wait = retry_wait(call, self.retry, attempt, status=r.status_code, retry_after=r.headers.get("retry-after"))
            if wait is None:
                raise error_of(r.status_code, r.content, r.headers.get("retry-after"))
            await asyncio.sleep(wait)

    async def predict(self, equipment_id: str, features: Mapping[str, float], *, power: str | None = None,
                      model_version: str | None = None) -> dict[str, Any]:
        return await self._send(Calls.predict(equipment_id, features, power, model_version))

    async def predict_window(self, equipment_id: str, readings: Sequence[Mapping[str, float]], *,
                             power: str | None = None, model_version: str | None = None) -> dict[str, Any]:
        return await self._send(Calls.predict_window(equipment_id, readings, power, model_version))

    async def predict_bulk(self, readings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return await self._send(Calls.predict_bulk(readings))

    async def predict_columns(self, equipment_id: str, columns: Columns, *, power: str | None = None,
                              model_version: str | None = None,
                              dtype: Literal["float64", "float32"] = "float64") -> dict[str, Any]:
        return await self._send(Calls.predict_columns(equipment_id, columns, power, model_version, dtype))

    async def bundles(self, equipment_id: str | None = None, power: str | None = None) -> dict[str, Any]:
        return await self._send(Calls.bundles(equipment_id, power))

    async def report(self, equipment_id: str, power: str, version: str) -> dict[str, Any]:
        return await self._send(Calls.report(equipment_id, power, version))

    async def sync(self) -> dict[str, Any]:
        return await self._send(Calls.sync())

    async def upload(self, archive: bytes | Path) -> dict[str, Any]:
        return await self._send(Calls.upload(archive.read_bytes() if isinstance(archive, Path) else archive))

    async def activate(self, equipment_id: str, power: str, version: str, *, pin: bool = True,
                       reason: str = "") -> dict[str, Any]:
        return await self._send(Calls.activate(equipment_id, power, version, pin, reason))

    async def rollback(self, equipment_id: str, power: str, *, reason: str = "") -> dict[str, Any]:
        return await self._send(Calls.rollback(equipment_id, power, reason))

    async def unpin(self, equipment_id: str, power: str, *, reason: str = "") -> dict[str, Any]:
        return await self._send(Calls.unpin(equipment_id, power, reason))

    async def alarms(self, *, state: str | None = None, severity: str | None = None,
                     type: str | None = None,  # noqa: A002
                     equipment_id: str | None = None, location: str | None = None, start: dt.datetime | None = None,
                     end: dt.datetime | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        return (await self._send(Calls.alarms(dict(state=state, severity=severity, type=type,
                                                   equipment_id=equipment_id, location=location, start=start,
                                                   end=end, limit=limit))))["alarms"]

    async def alarm(self, alarm_id: int) -> dict[str, Any]:
        return await self._send(Calls.alarm(alarm_id))

    async def ack(self, alarm_id: int, *, comment: str | None = None, actor: str | None = None) -> dict[str, Any]:
        return await self._send(Calls.alarm_action(alarm_id, "ack", comment, actor))

    async def clear(self, alarm_id: int, *, comment: str | None = None, actor: str | None = None) -> dict[str, Any]:
        return await self._send(Calls.alarm_action(alarm_id, "clear", comment, actor))

    async def status(self, location: str | None = None) -> dict[str, Any]:
        return await self._send(Calls.status(location))

    async def ready(self) -> bool:
        try:
            await self._send(Calls.ready())
            return True
        except Exception:
            return False

    async def whoami(self) -> dict[str, Any]:
        return await self._send(Calls.whoami())

    async def subscribe(self, equipment_id: str | None = None, *, location: str | None = None,
                        min_severity: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Live messages over the WebSocket (see :meth:`Client.subscribe`)."""
        import websockets

        url = "ws" + self.url[4:] + ws_path(equipment_id, location, min_severity)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        async with websockets.connect(url, additional_headers=headers) as ws:
            async for raw in ws:
                message = orjson.loads(raw)
                if message.get("type") != "ping":
                    yield message
