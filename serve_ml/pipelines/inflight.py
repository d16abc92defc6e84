"""What the stages of one consumer-client life share: the (at most two) batch writes
in flight, in batch order, and the stall watch (see ``pipelines.consumer``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from serve_ml.pipelines.watchdog import Positions, StallWatch

log = logging.getLogger("serve_ml.stream")


@dataclass
class InFlight:
    """What the stages of one client life share: the writes in flight and the watch."""

    stall: StallWatch
    read_positions: Callable[[], Awaitable[Positions]]
    older: asyncio.Task[None] | None = None
    pending: asyncio.Task[None] | None = None
    next_check_s: float = 0.0

    async def reap(self) -> None:
        """Collect writes that have finished (raising their error, if any)."""
        if self.older is not None and self.older.done():
            await self.older
            self.older = None
        if self.pending is not None and self.pending.done():
            await self.pending
            self.pending = None

    def abandon(self) -> None:
        for task in (self.pending, self.older):
            if task is not None and not task.done():
                # Its offsets are not committed: whoever consumes next gets the batch
                # again and the idempotent write skips what was stored.
                task.cancel()
            elif task is not None and not task.cancelled() and task.exception() is not None:
                # a later batch fails with the earlier one's error, which is the one raised
                log.debug("write of a later batch failed too: %s", task.exception())
