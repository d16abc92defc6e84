"""Pipeline faults of a stream scorer as alarms (type ``pipeline_fault``, equipment
``serve-ml``): the database unreachable, the broker failing, the consume loop
restarted or stalled. Raised as soon as the database takes it (at once for a
broker fault; on recovery for a database outage, which cannot be written while it
lasts) and resolved when the scorer next stores a batch, so the outage's start,
end and cause are in the alarm's timeline and reach the notification sinks."""

from __future__ import annotations

import datetime as dt
import logging

import asyncpg

from serve_ml.operations.alarm_store import clear_system_alarm, raise_system_alarm

log = logging.getLogger("serve_ml.stream")


class PipelineFaults:
    def __init__(self, scorer: str, database_url: str, topic: str) -> None:
        self.scorer = scorer
        self.database_url = database_url
        self.topic = topic
        self.active: dict[str, dict[str, str]] = {}  # what -> detail
        self.raised: set[str] = set()

    async def failing(self, what: str, exc: BaseException) -> None:
        """``what`` failed; raise its alarm now if the database takes it."""
        if what in self.active:
            return
        self.active[what] = {"scorer": self.scorer, "what": what, "error": f"{type(exc).__name__}: {exc}"[:500],
                             "since": dt.datetime.now(dt.UTC).isoformat()}
        await self._write(raise_only=True)

    async def recovered(self) -> None:
        """Everything that was failing works again: raise what could not be raised, resolve all."""
        if self.active:
            await self._write(raise_only=False)

    async def _write(self, *, raise_only: bool) -> None:
        try:
            conn = await asyncpg.connect(self.database_url, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.debug("pipeline fault not recorded yet: %s", exc)
            return
        try:
            async with conn.transaction():
                for what, detail in list(self.active.items()):
                    source = f"scorer:{self.scorer}:{what}"
                    if what not in self.raised:
                        await raise_system_alarm(conn, self.topic, source, "major", detail)
                        self.raised.add(what)
                    if not raise_only:
                        await clear_system_alarm(conn, self.topic, source)
            if not raise_only:
                self.active.clear()
                self.raised.clear()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.debug("pipeline fault not recorded yet: %s", exc)
        finally:
            await conn.close()
