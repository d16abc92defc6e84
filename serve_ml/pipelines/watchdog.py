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
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError, KafkaError

from serve_ml.pipelines.stream_metrics import StreamMetrics

log = logging.getLogger("serve_ml.stream")
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

    past_end_partitions: tuple[TopicPartition, ...] = ()
    """Partitions positioned beyond their high watermark: the broker lost that log
    (see :class:`LogGuard`)."""

    unmeasured: int = 0
    """Partitions with a position but no high watermark yet (no fetch answered since
    the assignment): neither behind nor known to be in order."""

    @property
    def past_end(self) -> int:
        return len(self.past_end_partitions)

    @property
    def complete(self) -> bool:
        """Every assigned partition had a position and a high watermark."""
        return self.unknown == 0 and self.unmeasured == 0

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
    beyond: list[TopicPartition] = []
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
            out.unmeasured += 1
            continue
        if pos > hw:
            beyond.append(tp)
        else:
            out.lag += hw - pos
    out.past_end_partitions = tuple(beyond)
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


class AssignmentEpoch(ConsumerRebalanceListener):  # aiokafka ships no type hints
    """Counts partition revocations and assignments: a batch whose epoch is no longer
    current was taken under a membership that has since changed."""

    def __init__(self) -> None:
        self.value = 0

    async def on_partitions_revoked(self, revoked: object) -> None:
        self.value += 1

    async def on_partitions_assigned(self, assigned: object) -> None:
        self.value += 1


class LogGuard:
    """Finds partitions whose log the broker lost and reads them again from the start.

    Kafka answers a fetch beyond the end of a log with ``OFFSET_OUT_OF_RANGE`` and
    the client resets by its policy. The embedded broker (Tansu, in memory) restarts
    with empty logs, answers such a fetch with no records, and once the new log grows
    past the position delivers from there: the start of the new log is skipped
    without a word. It also accepts an offset commit from a membership it no longer
    knows, so a commit retried through the outage lands old-log offsets on the new
    log (both seen against the real broker, ``tests/integration/test_stream_watchdog``).
    Two signs give it away: a position beyond the high watermark (checked after every
    rebalance and on idle polls), and, with the embedded broker only, a high
    watermark lower than one seen before. A durable Kafka's high watermark can dip
    during a leader failover, and re-reading from the beginning there would replay a
    partition's whole retention. Such a partition goes back to the beginning of its
    log, as Kafka's ``earliest`` reset would; idempotent writes skip what was stored.
    A restart whose new log outgrew both the old high watermark and the stale
    position before the first fetch shows neither sign: the embedded broker's
    in-memory loss, documented as such.

    ``epoch`` changes with every rebalance and every reset: a batch taken under an
    older one must not have its offsets committed.
    """

    def __init__(self, *, in_memory_broker: bool) -> None:
        self.in_memory_broker = in_memory_broker
        self.assignment = AssignmentEpoch()
        self.high: dict[TopicPartition, int] = {}
        self.resets = 0
        self.checked = -1  # the assignment epoch whose positions were all seen

    @property
    def epoch(self) -> int:
        return self.assignment.value + self.resets

    def shrunk(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """Assigned partitions whose high watermark went backwards since the last call."""
        out = []
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            if hw is None:
                continue
            if hw < self.high.get(tp, 0):
                out.append(tp)
            self.high[tp] = hw
        return out

    async def check(self, consumer: AIOKafkaConsumer, seen: Positions | None, read: Callable[[], Awaitable[Positions]]
                    ) -> list[TopicPartition]:
        """Send lost logs back to their beginning; return those partitions. ``seen`` is
        a fresh position read, or None: then ``read`` is called, but only when a
        rebalance has not been checked yet (the busy loop's case)."""
        lost = self.shrunk(consumer) if self.in_memory_broker else []
        why = {tp: "its high watermark went backwards" for tp in lost}
        if seen is None and self.checked != self.assignment.value:
            seen = await read()
        if seen is not None:
            if seen.complete:
                self.checked = self.assignment.value
            why.update((tp, "its position is beyond the log end") for tp in seen.past_end_partitions)
        tps = [tp for tp in why if tp in consumer.assignment()]
        if tps:
            await consumer.seek_to_beginning(*tps)
            for tp in tps:
                self.high.pop(tp, None)
            self.resets += 1
            log.warning("%s: the broker lost that log%s; reading it again from the beginning, what was "
                        "stored is skipped", "; ".join(f"{tp.topic}[{tp.partition}]: {why[tp]}" for tp in tps),
                        " (the embedded broker keeps logs in memory)" if self.in_memory_broker else "")
        return tps


async def refresh_lag_gauges(consumer: AIOKafkaConsumer, taken_offsets: Mapping[TopicPartition, int],
                             metrics: StreamMetrics) -> None:
    """Every assigned partition's lag, from its position when the loop has taken
    nothing from it since the last assignment or reset; re-set on every idle check,
    since Ray's metrics agent drops a gauge series when a process that reported it
    exits (a restarted scorer, for one)."""
    for tp in consumer.assignment():
        hw = consumer.highwater(tp)
        taken = taken_offsets.get(tp)
        if taken is None:
            try:
                taken = await consumer.position(tp)
            except (IllegalStateError, KafkaError):
                continue
        if hw is not None and taken is not None:
            metrics.partition_lag(tp.partition, max(0, hw - taken))


def taken_lag(consumer: AIOKafkaConsumer, taken_offsets: Mapping[TopicPartition, int], metrics: StreamMetrics) -> int:
    """Records behind the broker's high watermark, from the offsets the loop has
    taken, each partition's also set as its gauge; synchronous, so the busy path
    costs no await per batch (an empty poll reads the positions themselves, see
    :func:`positions`)."""
    lag = 0
    for tp in consumer.assignment():
        hw, taken = consumer.highwater(tp), taken_offsets.get(tp)
        if hw is not None and taken is not None:
            behind = max(0, hw - taken)
            lag += behind
            metrics.partition_lag(tp.partition, behind)
    return lag
