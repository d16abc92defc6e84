"""The dead-letter reader's sharing: one broker read serves concurrent callers and
repeats within ``cache_s``; a larger limit, or an older read, goes to the broker."""

from __future__ import annotations

import asyncio
from typing import Any

from serve_ml.operations.dead_letters import DeadLetters


class CountingReads(DeadLetters):
    """The topic stood in by a list (newest first); counts the reads of it."""

    def __init__(self, records: list[dict[str, Any]], cache_s: float) -> None:
        super().__init__("unused:9092", "dead-letters", cache_s=cache_s)
        self.records, self.reads = records, 0

    async def _newest(self, limit: int) -> list[dict[str, Any]]:
        self.reads += 1
        await asyncio.sleep(0.05)  # a broker round trip, during which others ask too
        return self.records[:limit]


def test_concurrent_and_repeated_reads_share_one_broker_read() -> None:
    dl = CountingReads([{"offset": i} for i in range(10, 0, -1)], cache_s=60)

    async def scenario() -> list[list[dict[str, Any]]]:
        return list(await asyncio.gather(dl.newest(5), dl.newest(5), dl.newest(3)))

    answers = asyncio.run(scenario())
    assert dl.reads == 1
    assert answers[0] == answers[1] == dl.records[:5] and answers[2] == dl.records[:3]
    assert asyncio.run(dl.newest(8)) == dl.records[:8] and dl.reads == 2  # more than was read: read again


def test_a_read_older_than_cache_s_goes_to_the_broker_again() -> None:
    dl = CountingReads([{"offset": 1}], cache_s=0.0)
    asyncio.run(dl.newest(5))
    dl.records = [{"offset": 2}, {"offset": 1}]
    assert asyncio.run(dl.newest(5)) == dl.records and dl.reads == 2
