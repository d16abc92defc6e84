"""Notice a Kafka consumer that has stopped making progress while it should not.

A Kafka client can come out of a broker restart or a rebalance believing all is well
while it fetches nothing: a partition whose position never becomes valid again, or a
position past the end of a log the broker lost (the embedded broker keeps messages in
memory only). The client cannot tell; the stream loop can, from outside: records are
known to be waiting, or a position is missing or beyond the log, and none has arrived
for a while. The loop then rebuilds its Kafka clients, which resume from the committed
offsets; idempotent writes make the replay harmless.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import IllegalStateError

POSITION_WAIT_S = 0.01  # a valid position is answered at once; a missing one is waited for


class ConsumerStalled(RuntimeError):
    """The consumer was behind and took no record for longer than allowed."""


@dataclass(slots=True)
class Positions:
    """The assigned partitions' positions against their high watermarks."""

    lag: int = 0
    """Records between the positions and the high watermarks, summed."""

    unknown: int = 0
    """Assigned partitions with no valid position (waiting for a committed offset or a reset)."""

    past_end: int = 0
    """Partitions positioned beyond their high watermark: the broker lost that log."""

    unassigned: bool = False
    """No partition assigned although the topic has at least one per group member."""

    @property
    def behind(self) -> bool:
        return self.lag > 0 or self.unknown > 0 or self.past_end > 0 or self.unassigned

    def describe(self) -> str:
        if self.unassigned:
            return "no partition assigned although the topic has enough for every member"
        return (f"lag {self.lag}, {self.unknown} partition(s) without a position, "
                f"{self.past_end} positioned past the log end")


async def positions(consumer: AIOKafkaConsumer, topic: str, members: int) -> Positions:
    """Read every assigned partition's position without waiting for one that is not
    there: ``consumer.position()`` alone waits for as long as that takes. ``members``
    is the group's intended size: with at least that many partitions in ``topic``,
    an empty assignment means this member was left out."""
    assigned = consumer.assignment()
    if not assigned:
        return Positions(unassigned=len(consumer.partitions_for_topic(topic) or ()) >= members)
    out = Positions()
    for tp in assigned:
        try:
            pos = await asyncio.wait_for(consumer.position(tp), POSITION_WAIT_S)
        except TimeoutError:
            out.unknown += 1
            continue
        except IllegalStateError:  # unassigned meanwhile: a rebalance is under way
            continue
        hw = consumer.highwater(tp)
        if hw is None:
            continue
        if pos > hw:
            out.past_end += 1
        else:
            out.lag += hw - pos
    return out


class StallWatch:
    """Says the consumer is stalled once it has been behind, without taking a single
    record, for ``timeout_s`` in a row. Any record taken starts the count again."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.behind_since: float | None = None

    def progressed(self) -> None:
        self.behind_since = None

    def stalled(self, now_s: float, seen: Positions) -> bool:
        if not seen.behind:
            self.behind_since = None
            return False
        if self.behind_since is None:
            self.behind_since = now_s
        return now_s - self.behind_since >= self.timeout_s
