"""The stall watchdog's view of a real consumer on the real broker: records waiting
are lag, a position beyond the high watermark (what a broker that lost its log
leaves a surviving consumer with) is named as such, and so is a member left with no
partition while the topic has one for every member."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipelines.stack import Stack
from pipelines.watchdog import Positions, StallWatch, positions
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
