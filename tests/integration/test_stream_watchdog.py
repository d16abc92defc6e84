"""The stall watchdog's view of a real consumer on the real broker: records waiting
are lag, a position beyond the high watermark (what a broker that lost its log
leaves a surviving consumer with) is named as such, and so is a member left with no
partition while the topic has one for every member. And the log guard: a broker
restarted with empty logs (the embedded one) makes a consumer skip the start of its
new log without an error, two ways; the guard reads it again from the start."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, IllegalStateError, UnknownMemberIdError

from serve_ml.pipelines.services import EmbeddedKafka
from serve_ml.pipelines.stack import Stack
from serve_ml.pipelines.watchdog import LogGuard, Positions, StallWatch, positions
from tests.streamkit import produce_raw

pytestmark = pytest.mark.integration


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


def test_positions_report_lag_a_position_past_the_log_end_and_a_member_left_out(stack: Stack) -> None:
    topic = f"serve-ml.test-watchdog-{uuid.uuid4().hex[:8]}"
    asyncio.run(_create_topic(stack.bootstrap, topic))
    produce_raw(stack, topic, [(b"k", b"%d" % i) for i in range(10)])

    async def observe() -> tuple[Positions, Positions, bool, Positions, Positions]:
        tp = TopicPartition(topic, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            # Before any assignment: as if a rejoin had left this member without partitions.
            left_out = await positions(consumer, topic, 1)
            one_of_two = await positions(consumer, topic, 2)  # 1 partition, 2 members: one idles by design
            consumer.assign([tp])
            taken = await consumer.getmany(tp, timeout_ms=10_000, max_records=4)
            assert len(taken[tp]) == 4
            behind = await positions(consumer, topic, 1)
            consumer.seek(tp, 1_000)  # as if the broker came back with a shorter log
            lost = await positions(consumer, topic, 1)
            return behind, lost, StallWatch(timeout_s=0).stalled(0.0, lost), left_out, one_of_two
        finally:
            await consumer.stop()

    behind, lost, stalled, left_out, one_of_two = asyncio.run(observe())
    assert (behind.lag, behind.unknown, behind.past_end, behind.unassigned) == (6, 0, 0, False)
    assert (lost.lag, lost.past_end) == (0, 1) and stalled
    assert left_out.unassigned and left_out.behind
    assert not one_of_two.unassigned and not one_of_two.behind


# --- A broker that lost its logs (the embedded one restarts empty) ---------------------
# These tests restart a broker of their own: the session's stack serves other tests.

@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedKafka]:
    kafka = EmbeddedKafka.create(tmp_path)
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


async def _restart(kafka: EmbeddedKafka, topic: str) -> None:
    kafka.stop()
    kafka.start()
    await _create_topic(kafka.bootstrap, topic)


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait(topic, v, key=b"k")
    finally:
        await producer.stop()


async def _drain(consumer: AIOKafkaConsumer, topic: str, guard: LogGuard | None, want: int,
                 timeout_s: float = 8.0) -> list[bytes]:
    """Poll like the stream loop does (the guard looks after every poll) until ``want``
    records came or time ran out."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        batch = await consumer.getmany(timeout_ms=100)
        got += [r.value for part in batch.values() for r in part]
        if guard is not None:
            await guard.check(consumer, await positions(consumer, topic, 1), lambda: positions(consumer, topic, 1))
    return got


async def _commit_through_outage(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int],
                                 timeout_s: float) -> None:
    """Commit as a scorer retrying through the outage would. The restarted broker may
    take the commit from the member it no longer knows, or refuse it until the member
    has rejoined (and been given the partition again); either way the old log's offset
    lands on the new log."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await asyncio.wait_for(consumer.commit(offsets), max(deadline - time.monotonic(), 0.1))
            return
        except (CommitFailedError, IllegalStateError, UnknownMemberIdError):
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.2)


def _group_consumer(bootstrap: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                            auto_offset_reset="earliest", metadata_max_age_ms=2000,
                            session_timeout_ms=6000, heartbeat_interval_ms=1000, rebalance_timeout_ms=6000)


def test_a_stale_commit_taken_by_a_restarted_broker_does_not_skip_its_new_log(own_broker: EmbeddedKafka) -> None:
    """The restarted embedded broker accepts a commit of old-log offsets from a member
    it no longer knows; a consumer starting from it would skip the new log's start
    (the control shows that it does). The guard reads the new log from its start."""
    topic, group = "serve-ml.test-stale-commit", "g-stale"
    tp = TopicPartition(topic, 0)

    async def scenario() -> tuple[list[bytes], list[bytes], int]:
        bs = own_broker.bootstrap
        await _create_topic(bs, topic)
        await _produce(bs, topic, [b"old%d" % i for i in range(50)])
        first = _group_consumer(bs, group)
        await first.start()
        first.subscribe([topic])
        assert len(await _drain(first, topic, None, 50)) == 50
        await _restart(own_broker, topic)
        try:
            await _commit_through_outage(first, {tp: 50}, timeout_s=15.0)
        finally:
            await first.stop()
        await _produce(bs, topic, [b"new%d" % i for i in range(5)])
        control = _group_consumer(bs, group)
        await control.start()
        control.subscribe([topic])
        skipped = await _drain(control, topic, None, 5, timeout_s=3.0)
        control_position = await control.position(tp)
        await control.stop()
        guarded, guard = _group_consumer(bs, group), LogGuard(in_memory_broker=True)
        await guarded.start()
        guarded.subscribe([topic], listener=guard.assignment)
        try:
            return skipped, await _drain(guarded, topic, guard, 5), control_position
        finally:
            await guarded.stop()

    skipped, read, control_position = asyncio.run(scenario())
    assert skipped == [] and control_position == 50, "the broker no longer shows the fault this guards against"
    assert read == [b"new%d" % i for i in range(5)]


@pytest.mark.parametrize("in_memory_broker", [True, False])
def test_a_log_that_shrank_is_read_again_from_its_start_on_the_embedded_broker_only(
        own_broker: EmbeddedKafka, in_memory_broker: bool) -> None:
    """A consumer at offset 10 when the broker comes back fetches the new log from 10
    once it is that long: 0-9 are skipped without an error. The high watermark went
    from 50 to 20, which gives it away; the guard acts on that only for the embedded
    broker (a durable Kafka's can dip in a leader failover)."""
    topic = "serve-ml.test-shrunk"
    tp = TopicPartition(topic, 0)
    new = [b"new%d" % i for i in range(20)]

    async def scenario() -> tuple[list[bytes], list[TopicPartition]]:
        bs = own_broker.bootstrap
        await _create_topic(bs, topic)
        await _produce(bs, topic, [b"old%d" % i for i in range(50)])
        consumer = AIOKafkaConsumer(bootstrap_servers=bs, enable_auto_commit=False, auto_offset_reset="earliest")
        guard = LogGuard(in_memory_broker=in_memory_broker)
        await consumer.start()
        consumer.assign([tp])
        try:
            assert len(await _drain(consumer, topic, guard, 50)) == 50  # the guard saw high watermark 50
            await _restart(own_broker, topic)
            await _produce(bs, topic, new)
            consumer.seek(tp, 10)  # where this consumer stood when the broker came back
            got: list[bytes] = []
            reset: list[TopicPartition] = []
            deadline = time.monotonic() + 10
            done = (lambda: set(new) <= set(got)) if in_memory_broker else (lambda: new[-1] in got)
            while time.monotonic() < deadline and not done():
                batch = await consumer.getmany(tp, timeout_ms=200)
                got += [r.value for r in batch.get(tp, [])]
                reset += await guard.check(consumer, await positions(consumer, topic, 1),
                                           lambda: positions(consumer, topic, 1))
            return got, reset
        finally:
            await consumer.stop()

    got, reset = asyncio.run(scenario())
    if in_memory_broker:
        assert reset == [tp] and set(new) <= set(got)
    else:  # the fault itself, left alone: the new log's start never arrives
        assert reset == [] and got == new[10:]
