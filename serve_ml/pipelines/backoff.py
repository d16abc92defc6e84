"""The one retry pace of the stream side: 0.2 s, then up to 5 s, for failures in a row."""

from __future__ import annotations

import asyncio

STEPS_S = (0.2, 0.5, 1.0, 2.0, 5.0)


class Backoff:
    """Delays for consecutive failures; :meth:`reset` after progress."""

    def __init__(self, steps_s: tuple[float, ...] = STEPS_S) -> None:
        self.steps_s = steps_s
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next_s(self) -> float:
        delay = self.steps_s[min(self.attempt, len(self.steps_s) - 1)]
        self.attempt += 1
        return delay

    async def sleep(self) -> float:
        """Wait the next delay; return it (for the log line)."""
        delay = self.next_s()
        await asyncio.sleep(delay)
        return delay
