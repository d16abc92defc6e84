"""Live pushes to WebSocket clients: one LISTEN connection per replica of the
live application (``deployments.live_gateway``) on the channel the stream writer
and the alarm lifecycle notify (``pipelines.live``, ``operations.alarm_store``),
fanned out to subscribers.

The hub advertises the equipment its clients follow (``operations.live_follows``);
the writers send those equipment's batch summaries only, so a client's first one
comes within about a second of subscribing.

A subscriber has a bounded queue. When it is full, the oldest message is dropped
for the new one (each verdict message supersedes the one before; the client is
told how many it missed), and a client whose queue stays full for
``slow_close_after_s`` is closed with code 4008. The stream never waits for a
client: the writer's NOTIFY costs the same with one client or a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from serve_ml.operations.alarm_store import LIVE_CHANNEL, SEVERITY_RANK
from serve_ml.operations.live_follows import FOLLOW_TTL_S, advertise, withdraw

log = logging.getLogger("serve_ml.live")
REGISTRY_REFRESH_S = 10.0
RECONNECT_S = 1.0


@dataclass(eq=False)
class Subscriber:
    """One WebSocket client: the equipment it follows, or its alarm filter."""

    client: str
    equipment_id: str | None = None
    location: tuple[str, ...] | None = None  # alarms at or under this location only
    min_severity: str | None = None
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(256))
    dropped: int = 0
    full_since: float | None = None
    too_slow: asyncio.Event = field(default_factory=asyncio.Event)
    sent_at: float = 0.0  # the event loop's clock at the last send (the idle ping keys on it)


class LiveHub:
    def __init__(self, database_url: str | None, *, max_per_client: int = 16, max_connections: int | None = None,
                 slow_close_after_s: float = 10.0) -> None:
        self.database_url = database_url
        self.max_per_client = max_per_client
        self.max_connections = max_connections  # None: no limit of the hub's own
        self._slots = 0  # sockets accepted and not yet ended, subscribed or not
        self.slow_close_after_s = slow_close_after_s
        self._subs: set[Subscriber] = set()
        # a NOTIFY reaches only its equipment's followers and the alarm streams, so its
        # cost does not grow with the clients of every other machine
        self._by_equipment: dict[str, set[Subscriber]] = {}
        self._alarm_streams: set[Subscriber] = set()
        self._per_client: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._locations: dict[str, tuple[str, ...]] = {}
        self._locations_at = 0.0
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()  # one query at a time on the listening connection
        self.counts = {"messages": 0, "delivered": 0, "dropped": 0, "closed_slow": 0, "refused_full": 0}
        self.hub_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._advertised: frozenset[str] | None = None  # None: to be written (again)
        self._advertised_at = 0.0

    @property
    def connections(self) -> int:
        """Clients subscribed now."""
        return len(self._subs)

    def admit(self, client: str) -> bool:
        """Room for one more connection from ``client``?"""
        return self._per_client[client] < self.max_per_client

    def take_slot(self) -> bool:
        """Hold one of ``max_connections`` for an accepted socket, until
        :meth:`release_slot`; False (and a refusal counted) when all are held."""
        if self.max_connections is not None and self._slots >= self.max_connections:
            self.counts["refused_full"] += 1
            return False
        self._slots += 1
        return True

    def release_slot(self) -> None:
        self._slots -= 1

    async def subscribe(self, sub: Subscriber, timeout_s: float = 5.0) -> None:
        """Register ``sub``; returns once the LISTEN connection is up (so nothing
        committed after this is missed)."""
        if self.database_url is None:
            raise RuntimeError("no database is configured (set DATABASE_URL or run `make up`)")
        self._register(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen())
        await asyncio.wait_for(self._connected.wait(), timeout_s)
        await self._advertise()
        if sub.location is not None:  # a filter by location needs the registry as it is now
            await self._refresh_locations(force=True)

    def _register(self, sub: Subscriber) -> None:
        self._subs.add(sub)
        if sub.equipment_id is None:
            self._alarm_streams.add(sub)
        else:
            self._by_equipment.setdefault(sub.equipment_id, set()).add(sub)
        self._per_client[sub.client] += 1

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self._subs:
            self._subs.discard(sub)
            if sub.equipment_id is None:
                self._alarm_streams.discard(sub)
            else:
                followers = self._by_equipment[sub.equipment_id]
                followers.discard(sub)
                if not followers:
                    del self._by_equipment[sub.equipment_id]
            self._per_client[sub.client] -= 1
            if self._per_client[sub.client] <= 0:
                del self._per_client[sub.client]

    async def _listen(self) -> None:
        assert self.database_url is not None
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self.database_url)
                await conn.add_listener(LIVE_CHANNEL, self._on_notify)
                self._conn = conn
                self._advertised = None
                await self._refresh_locations(force=True)
                await self._advertise()
                self._connected.set()
                while not conn.is_closed():
                    await asyncio.sleep(1.0)
                    await self._refresh_locations()
                    await self._advertise()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away: reconnect; clients keep their sockets
                log.warning("live listener: %s", exc)
            finally:
                self._connected.clear()
                self._conn = None
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(RECONNECT_S)

    async def _refresh_locations(self, *, force: bool = False) -> None:
        """The registry's locations (for alarm filters), every ``REGISTRY_REFRESH_S`` while
        a subscriber filters by location, and at once when one subscribes."""
        if not force and (time.monotonic() - self._locations_at < REGISTRY_REFRESH_S
                          or not any(s.location is not None for s in self._subs)):
            return
        async with self._lock:
            if self._conn is None:
                return
            self._locations = {r["equipment_id"]: tuple(r["location"]) for r in await self._conn.fetch(
                "SELECT equipment_id, location FROM serve_ml_equipment")}
            self._locations_at = time.monotonic()

    async def _advertise(self) -> None:
        """Tell the writers which equipment this hub's clients follow: when that
        changed, and every third of the advertisement's lifetime. A failure is
        logged and tried again a second later; it never ends the listener."""
        async with self._lock:  # the set read under the lock: the last write is the newest set
            followed = frozenset(self._by_equipment)
            if self._conn is None or (followed == self._advertised
                                      and time.monotonic() - self._advertised_at < FOLLOW_TTL_S / 3):
                return
            try:
                await advertise(self._conn, self.hub_id, followed)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.warning("advertising the followed equipment: %s", exc)
                return
            self._advertised, self._advertised_at = followed, time.monotonic()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.counts["messages"] += 1
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if doc.get("type") == "alarm":
            alarm = doc.get("alarm") or {}
            eq = alarm.get("equipment_id")
            rank = SEVERITY_RANK.get(alarm.get("severity", ""), -1)
            where = self._locations.get(eq) if isinstance(eq, str) else None
            for sub in self._by_equipment.get(eq, ()) if isinstance(eq, str) else ():
                self._put(sub, payload)
            for sub in self._alarm_streams:
                if sub.min_severity is not None and rank < SEVERITY_RANK[sub.min_severity]:
                    continue
                if sub.location is not None and (where is None or where[:len(sub.location)] != sub.location):
                    continue
                self._put(sub, payload)
        else:
            eq = doc.get("equipment_id")
            for sub in self._by_equipment.get(eq, ()) if isinstance(eq, str) else ():
                self._put(sub, payload)

    def _put(self, sub: Subscriber, payload: str) -> None:
        try:
            sub.queue.put_nowait(payload)
            sub.full_since = None
            self.counts["delivered"] += 1
            return
        except asyncio.QueueFull:
            pass
        now = time.monotonic()
        sub.full_since = sub.full_since or now
        with contextlib.suppress(asyncio.QueueEmpty):
            sub.queue.get_nowait()
        sub.queue.put_nowait(payload)
        sub.dropped += 1
        self.counts["dropped"] += 1
        if now - sub.full_since >= self.slow_close_after_s and not sub.too_slow.is_set():
            sub.too_slow.set()
            self.counts["closed_slow"] += 1

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):  # the rows expire anyway
                    await withdraw(self._conn, self.hub_id)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
