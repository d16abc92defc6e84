"""Column-wise verdicts: a timeline merges an equipment's groups in time order and
builds the same Verdict a row-by-row list would hold."""

from __future__ import annotations

import datetime as dt

import numpy as np

from serve_ml.pipelines.pgcopy import timestamps_us
from serve_ml.pipelines.verdicts import Judged, Timeline, Verdict, all_verdicts, days

T0 = dt.datetime(2026, 11, 24, 23, 59, 58, tzinfo=dt.UTC)


def group(version: str, seconds: list[float], anomaly: list[bool], *, label: str | None = None) -> Judged:
    times = [T0 + dt.timedelta(seconds=s) for s in seconds]
    flags = np.array(anomaly)
    return Judged("press-02", "7.5kW", version, times, timestamps_us(times), flags,
                  np.arange(len(times), dtype=float) + (10 if version == "2" else 0), [label] * len(times),
                  [("thermal", flags), ("mechanical", np.zeros(len(times), bool))], np.arange(len(times)))


def test_timeline_merges_groups_in_time_order() -> None:
    a = group("1", [0, 2, 4], [False, True, False], label="HDF")
    b = group("2", [1, 3, 5], [True, False, False])
    line = Timeline([a, b])
    want = sorted(all_verdicts([a, b]), key=lambda v: v.time)
    assert [line.verdict(p) for p in range(len(line))] == want
    assert [line.time(p) for p in range(len(line))] == [v.time for v in want]
    assert [int(p) for p in line.anomalous] == [1, 2]  # seconds 1 and 2
    assert line.verdict(2) == Verdict(a.times[1], "press-02", "7.5kW", "1", True, 1.0, "HDF", ["thermal"])
    assert line.verdict(0).modalities == []  # normal rows name no modality


def test_take_and_days() -> None:
    a = group("1", [0, 1, 2, 3], [False, True, True, False])
    sub = a.take([3, 1])
    assert all_verdicts([sub]) == [a.verdict(3), a.verdict(1)]
    # 23:59:58 + 0..3 s spans midnight: two daily partitions
    assert days([a]) == [dt.datetime(2026, 11, 24, tzinfo=dt.UTC), dt.datetime(2026, 11, 25, tzinfo=dt.UTC)]
    assert days([]) == []
