"""The live simulator's run-to-failure machine: one unit from new to failed, read
several times a cycle, then the next; what the demo's RUL bundle was trained on."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from serve_ml.bundles.run_to_failure import (
    LIVE_LIFE_CYCLES,
    LIVE_READINGS_PER_CYCLE,
    SENSORS,
    expand_cycles,
    simulate_fleet,
)
from serve_ml.pipelines.simulator import Machine, ReadingSource, parse_machines


def test_the_profile_parses_and_a_wrong_one_names_it() -> None:
    [m] = parse_machines("spindle-04:7.5kW:run_to_failure+spike=current_a")
    assert (m.equipment_id, m.power, m.profile, m.quirks) == ("spindle-04", "7.5kW", "run_to_failure",
                                                               (("spike", "current_a"),))
    with pytest.raises(ValueError, match="run_to_failure"):
        Machine.parse("spindle-04:7.5kW:wears_out")


def test_a_unit_runs_new_to_failed_then_the_next_begins() -> None:
    src = ReadingSource(Machine("spindle-04", "7.5kW", "run_to_failure"), seed=3)
    first = orjson.loads(src.next_payload())
    life = len(src.buf) + 1  # readings of the first unit
    lo, hi = LIVE_LIFE_CYCLES
    assert life % LIVE_READINGS_PER_CYCLE == 0 and lo <= life // LIVE_READINGS_PER_CYCLE <= hi
    unit = [first["features"]] + [orjson.loads(src.next_payload())["features"] for _ in range(life - 1)]
    assert all(set(f) == set(SENSORS) for f in unit) and first["equipment_id"] == "spindle-04"
    # worn out at the end: vibration (bearing) or the temperature rise (thermal) well above new
    head, tail = unit[:100], unit[-100:]

    def mean(rows: list[dict], f: str) -> float:
        return float(np.mean([r[f] for r in rows]))

    def rise(rows: list[dict]) -> float:
        return mean(rows, "process_temp_k") - mean(rows, "air_temp_k")

    assert (mean(tail, "vibration_rms_mm_s") - mean(head, "vibration_rms_mm_s") > 1.0
            or rise(tail) - rise(head) > 4.0)
    nxt = orjson.loads(src.next_payload())["features"]  # a new unit: back to a new machine's levels
    assert len(src.buf) >= lo * LIVE_READINGS_PER_CYCLE - 1
    assert nxt["vibration_rms_mm_s"] < mean(tail, "vibration_rms_mm_s") or \
        nxt["process_temp_k"] - nxt["air_temp_k"] < rise(tail)


def test_expanded_cycles_repeat_the_cycle_with_fresh_noise() -> None:
    fleet = simulate_fleet(2, seed=1, min_life=20, max_life=30)
    wide = expand_cycles(fleet, 4, np.random.default_rng(0))
    assert len(wide.unit) == 4 * len(fleet.unit)
    assert np.array_equal(wide.cycle, np.repeat(fleet.cycle, 4)) and wide.life == fleet.life
    assert np.array_equal(wide.rul(cap=125), np.repeat(fleet.rul(cap=125), 4))
    same_cycle = wide.sensors["vibration_rms_mm_s"][:4]
    assert len(set(same_cycle.tolist())) == 4  # each reading has its own noise
    assert abs(float(same_cycle.mean()) - float(fleet.sensors["vibration_rms_mm_s"][0])) < 0.5
    with pytest.raises(ValueError, match="per_cycle"):
        expand_cycles(fleet, 0, np.random.default_rng(0))
