"""The data-quality gate's screen: physical ranges and flatlines, across batches."""

from __future__ import annotations

import numpy as np

from serve_ml.bundles.scoring import FAULT_FLATLINE, FAULT_OUT_OF_RANGE
from serve_ml.operations.thresholds import Limits, Placement, Rule, ThresholdBook
from serve_ml.pipelines.quality import SensorScreen


def test_flatline_counts_runs_across_batches_and_resets_on_change() -> None:
    screen = SensorScreen(flatline_readings=4)
    a = screen("m1", {"t": np.array([1.0, 2.0, 2.0, 2.0])})
    assert a == {}  # three repeats of 2.0 so far
    b = screen("m1", {"t": np.array([2.0, 2.0, 3.0, 3.0])})
    assert b["t"].tolist() == [FAULT_FLATLINE, FAULT_FLATLINE, 0, 0]
    c = screen("m1", {"t": np.array([3.0, 3.0, 3.0])})  # 3.0 for the 3rd..5th time
    assert c["t"].tolist() == [0, FAULT_FLATLINE, FAULT_FLATLINE]
    assert screen("m2", {"t": np.array([3.0, 3.0])}) == {}  # per equipment
    one = SensorScreen(flatline_readings=3)
    assert one("m1", {"t": np.array([5.0] * 5)})["t"].tolist() == [0, 0, 2, 2, 2]


def test_out_of_range_uses_the_physical_range_at_any_scope_and_wins_over_flatline() -> None:
    screen = SensorScreen(flatline_readings=2)
    screen.book = ThresholdBook([Rule("type", "press", "t", Limits(valid_min=-40, valid_max=150), 1)],
                                {"m1": Placement("press", ())})
    got = screen("m1", {"t": np.array([20.0, 999.0, 999.0, 21.0]), "u": np.array([1.0, 2.0, 3.0, 4.0])})
    assert got == {"t": got["t"]} and got["t"].tolist() == [0, FAULT_OUT_OF_RANGE, FAULT_OUT_OF_RANGE, 0]
    assert screen("other", {"t": np.array([999.0])}) == {}  # no range declared for it
    assert SensorScreen(flatline_readings=0)("m1", {"t": np.array([1.0] * 50)}) == {}  # 0: flatline off
