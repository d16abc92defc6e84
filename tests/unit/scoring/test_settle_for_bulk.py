"""The stream scorer's collector settings: a batch's short-lived objects are freed
before a young-generation collection walks them."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from serve_ml.scoring.service import BULK_GC_THRESHOLDS, settle_for_bulk


@pytest.fixture
def restore_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def _collections_during_a_batch(rows: int) -> int:
    """How many collections run while a batch of ``rows`` readings' worth of tracked
    tuples is built, held and dropped, as the scorer does per micro-batch."""
    seen: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.collect()
    gc.callbacks.append(count)
    try:
        batch = [(("press-02", {"vibration_rms_mm_s": float(i)}, None, None), i, None) for i in range(rows)]
        del batch
    finally:
        gc.callbacks.remove(count)
    return len(seen)


@pytest.mark.usefixtures("restore_collector")
def test_a_batch_triggers_collections_at_the_default_thresholds() -> None:
    gc.set_threshold(700, 10, 10)
    assert _collections_during_a_batch(8_000) >= 10


@pytest.mark.usefixtures("restore_collector")
def test_settle_for_bulk_lets_a_batch_go_uncollected() -> None:
    settle_for_bulk()
    assert gc.get_threshold() == BULK_GC_THRESHOLDS
    assert gc.get_freeze_count() > 0  # what was alive before is out of the collector's walk
    assert _collections_during_a_batch(8_000) == 0
