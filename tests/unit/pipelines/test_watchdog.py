"""The stall watch: behind without progress for the timeout -> stalled; any record
taken, or nothing left to take, starts the count again."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from serve_ml.pipelines.watchdog import LogGuard, Positions, StallWatch

LOST = TopicPartition("serve-ml.features", 0)

BEHIND = Positions(lag=5)
CAUGHT_UP = Positions()


def test_behind_for_the_whole_timeout_is_a_stall() -> None:
    watch = StallWatch(timeout_s=20)
    assert not watch.stalled(100.0, BEHIND)
    assert not watch.stalled(119.9, BEHIND)
    assert watch.stalled(120.0, BEHIND)


def test_a_record_taken_or_a_caught_up_poll_restarts_the_count() -> None:
    watch = StallWatch(timeout_s=20)
    watch.stalled(100.0, BEHIND)
    watch.progressed()
    assert not watch.stalled(119.0, BEHIND)
    assert not watch.stalled(130.0, CAUGHT_UP)
    assert not watch.stalled(145.0, BEHIND)
    assert watch.stalled(165.0, BEHIND)


def test_caught_up_is_never_a_stall() -> None:
    watch = StallWatch(timeout_s=1)
    assert not any(watch.stalled(float(t), CAUGHT_UP) for t in range(100))


def test_a_missing_position_one_past_the_log_end_or_no_assignment_counts_as_behind() -> None:
    assert Positions(unknown=1).behind and Positions(past_end_partitions=(LOST,)).behind and Positions(lag=1).behind
    assert Positions(unassigned=True).behind and "no partition assigned" in Positions(unassigned=True).describe()
    assert not CAUGHT_UP.behind
    assert "1 positioned past the log end" in Positions(past_end_partitions=(LOST,)).describe()


def test_the_log_guard_epoch_moves_with_every_rebalance_step_and_reset() -> None:
    """A batch's offsets are committed only under the epoch it was taken in."""
    guard = LogGuard(in_memory_broker=True)
    taken = guard.epoch
    asyncio.run(guard.assignment.on_partitions_revoked(set()))
    assert guard.epoch != taken
    taken = guard.epoch
    asyncio.run(guard.assignment.on_partitions_assigned(set()))
    assert guard.epoch != taken
    taken = guard.epoch
    guard.resets += 1
    assert guard.epoch != taken
