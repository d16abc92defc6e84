"""The stream's windows for sequence bundles: readings windowed in event-time order
whatever order they came in, scored without the sequence gate until the window is
whole or when late, refilled from stored readings so a restart is not blind."""

from __future__ import annotations

import asyncio
import datetime as dt

import numpy as np
import pytest

from serve_ml.bundles.batch import Reading, in_order, score_groups
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.scoring import score_group
from serve_ml.bundles.simulation import MachineSpec, simulate
from serve_ml.pipelines.encode import Origin
from serve_ml.pipelines.pgcopy import timestamps_us
from serve_ml.pipelines.windows import StreamWindows
from tests.conftest import build_seq_bundle

STEPS = 6
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
FEATURES = ("air_temp_k", "process_temp_k", "vibration_rms_mm_s", "current_a")


@pytest.fixture(scope="module")
def cat(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    root = tmp_path_factory.mktemp("seqstream")
    build_seq_bundle(root, "fan-3", "7.5kW", "1.0.0", steps=STEPS)
    return Catalog.scan(root)


def _series(n: int, seed: int = 1) -> list[dict[str, float]]:
    cols = simulate(n, spec=MachineSpec.for_power("7.5kW"), rng=np.random.default_rng(seed))
    return [{f: float(cols[f][i]) for f in FEATURES} for i in range(n)]


def _batch(rows: list[dict[str, float]], seconds: list[int]) -> tuple[list[Reading], list[Origin]]:
    readings = [Reading("fan-3", r, "7.5kW") for r in rows]
    origins = [Origin(T0 + dt.timedelta(seconds=s), r, "kafka", 0, s) for s, r in zip(seconds, rows, strict=True)]
    return readings, origins


def _verdicts(cat: Catalog, windows: StreamWindows, readings: list[Reading], origins: list[Origin]) -> list[dict]:
    windows.bind(origins)
    return in_order(len(readings), score_groups(cat, readings, enable_xgb=False, history=windows))  # type: ignore[return-value]


def test_windows_follow_event_time_and_fill_before_the_sequence_gate_speaks(cat: Catalog) -> None:
    series = _series(20)
    seconds = list(range(20))
    shuffled = np.random.default_rng(0).permutation(20).tolist()
    readings, origins = _batch([series[i] for i in shuffled], [seconds[i] for i in shuffled])
    windows = StreamWindows()
    verdicts = _verdicts(cat, windows, readings, origins)
    by_time = [verdicts[shuffled.index(t)] for t in range(20)]
    motor = [v["modalities"]["motor"]["status"] for v in by_time]
    assert motor == ["absent"] * (STEPS - 1) + ["scored"] * (20 - STEPS + 1)
    assert {v["modalities"]["thermal"]["status"] for v in by_time} == {"scored"}  # the dense gate never waits
    bundle = cat.live_bundle("fan-3", "7.5kW")
    window = {f: np.array([[series[t][f] for t in range(12 - STEPS + 1, 13)]]) for f in FEATURES}
    direct = score_group(bundle, window, 1, enable_xgb=False)
    assert by_time[12]["modalities"]["motor"]["error"] == pytest.approx(float(direct.modalities[1].errors[0]))
    # a late reading: older than the newest in its window
    readings, origins = _batch([series[3]], [5])
    (late,) = _verdicts(cat, windows, readings, origins)
    assert late["modalities"]["motor"]["status"] == "absent" and windows.late == 1


def test_a_restarted_scorer_refills_its_windows_from_stored_readings(cat: Catalog) -> None:
    series = _series(30, seed=2)
    stored = [(T0 + dt.timedelta(seconds=s), series[s]) for s in range(20)]

    async def fetch(eq: str, power: str, before: dt.datetime, limit: int):
        assert (eq, power) == ("fan-3", "7.5kW")
        return sorted([x for x in stored if x[0] < before], key=lambda x: x[0], reverse=True)[:limit]

    fresh = StreamWindows()
    readings, origins = _batch(series[20:23], [20, 21, 22])
    asyncio.run(fresh.refill(cat, origins, [r.equipment_id for r in readings], fetch))
    assert fresh.refilled == STEPS - 1
    got = [v["modalities"]["motor"]["status"] for v in _verdicts(cat, fresh, readings, origins)]
    assert got == ["scored"] * 3  # not blind after the restart
    asyncio.run(fresh.refill(cat, origins, [r.equipment_id for r in readings], fetch))
    assert fresh.refilled == STEPS - 1  # whole windows are not read again


def _reference(buf: list[tuple[int, dict[str, float]]], times: list[int], columns: dict[str, np.ndarray],
               steps: int) -> tuple[list[bool], dict[str, list[list[float]]], int, list]:
    """The rule of the module docstring, one reading at a time: event-time order
    (arrival order among equal times), late when older than the newest buffered, whole
    when the last ``steps`` readings carry every feature."""
    full, wins, late = [False] * len(times), {f: [] for f in columns}, 0
    ready = {}
    for k in sorted(range(len(times)), key=lambda k: times[k]):
        step = (times[k], {f: float(columns[f][k]) for f in columns})
        if buf and times[k] < buf[-1][0]:
            late += 1
            continue
        window = [*buf, step][-steps:]
        if len(window) == steps and all(f in s for _, s in window for f in columns):
            full[k], ready[k] = True, window
        buf = [*buf, step][-(steps - 1):]
    for k in sorted(ready):
        for f in columns:
            wins[f].append([s[f] for _, s in ready[k]])
    return full, wins, late, buf


def test_windows_match_the_rule_reading_by_reading(cat: Catalog) -> None:
    """Random batches with ties, late readings and stored readings lacking a feature:
    the array implementation gives the same windows, late count and buffer."""
    rng = np.random.default_rng(7)
    bundle = cat.live_bundle("fan-3", "7.5kW")
    windows = StreamWindows()
    key = ("fan-3", "7.5kW")
    t0 = int(timestamps_us([T0])[0])  # the windows' clock: PostgreSQL's µs
    windows._buffer(key, STEPS).extend([(t0 - 5_000_000, {"air_temp_k": 300.0}),  # stored, short of features
                                        (t0 - 4_000_000, {f: 1.0 for f in FEATURES})])
    clock = 0
    for _ in range(40):
        n = int(rng.integers(0, 12))
        seconds = (clock + rng.integers(-3, 4, size=n)).tolist()  # some before the window's newest: late
        clock += 3
        cols = {f: rng.normal(size=n) for f in FEATURES}
        origins = [Origin(T0 + dt.timedelta(seconds=s), {}, "kafka", 0, i) for i, s in enumerate(seconds)]
        before = list(windows._buffers[key])
        late0 = windows.late
        want_full, want_wins, want_late, want_buf = _reference(before, [t0 + s * 1_000_000 for s in seconds],
                                                               cols, STEPS)
        windows.bind(origins)
        got_full, got_wins = windows.windows(bundle, list(range(n)), cols)
        assert got_full.tolist() == want_full
        assert windows.late - late0 == want_late
        for f in FEATURES:
            assert got_wins[f].shape == (sum(want_full), STEPS)
            np.testing.assert_array_equal(got_wins[f], np.array(want_wins[f]).reshape(-1, STEPS))
        assert list(windows._buffers[key]) == want_buf
    assert windows.late > 0 and len(want_buf) == STEPS - 1  # the batches did reach both cases
