"""Run-to-failure trajectories: several units (machines), each run from new until it
fails, in the CSV shape the builder reads for remaining useful life (RUL).

Each unit gets a lifetime, a failure mode and a degradation exponent. Its health
falls from 1 (new) to 0 (failed) as ``1 - (cycle / life) ** p`` with ``p`` between
1.5 and 3, so wear is slow at first and accelerates towards the end. Each cycle runs
in one of three operating regimes (speed and torque set points), which move every
sensor's baseline; the regime is a column, as an operating setting is in public
run-to-failure data. The damage shows on the sensors its mode affects:

* ``bearing``: vibration grows (quadratically in damage) and motor current with it;
* ``thermal``: cooling degrades, the process runs hotter and the temperature rise
  above ambient grows.

Every sensor carries measurement noise, and each unit has its own small offsets
(no two machines read alike).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODES = ("bearing", "thermal")
# speed (rpm), torque (Nm) per operating regime
REGIMES = ((1500.0, 40.0), (1800.0, 30.0), (1200.0, 55.0))
SENSORS = ("air_temp_k", "process_temp_k", "speed_rpm", "torque_nm", "vibration_rms_mm_s", "current_a")
COLUMNS = ("unit", "cycle", "regime", *SENSORS, "failure_mode")
# The builder's gates on this shape, when no --modality is given.
MODALITIES = {"thermal": ["air_temp_k", "process_temp_k"],
              "mechanical": ["speed_rpm", "torque_nm", "vibration_rms_mm_s", "current_a"]}
_VOLT_PF = math.sqrt(3) * 400.0 * 0.85


@dataclass(frozen=True)
class Fleet:
    """Rows of every unit, in unit then cycle order."""

    unit: np.ndarray  # str
    cycle: np.ndarray  # int, 1..life
    regime: np.ndarray  # int
    sensors: dict[str, np.ndarray]
    failure_mode: np.ndarray  # str, the unit's mode on each of its rows
    life: dict[str, int]  # unit -> its last cycle

    def rul(self, cap: float | None = None) -> np.ndarray:
        """``last_cycle - cycle`` per row, optionally capped."""
        last = np.array([self.life[u] for u in self.unit.tolist()])
        out = (last - self.cycle).astype(np.float64)
        return out if cap is None else np.minimum(out, cap)


def simulate_fleet(units: int, *, seed: int = 0, min_life: int = 150, max_life: int = 350) -> Fleet:
    """``units`` run-to-failure trajectories."""
    if units < 1:
        raise ValueError("units must be at least 1")
    if not 10 <= min_life <= max_life:
        raise ValueError("need 10 <= min_life <= max_life")
    rng = np.random.default_rng(seed)
    parts: list[dict[str, np.ndarray]] = []
    life: dict[str, int] = {}
    for u in range(units):
        name = f"unit-{u + 1:03d}"
        n = int(rng.integers(min_life, max_life + 1))
        life[name] = n
        mode = MODES[u % len(MODES)]
        p = rng.uniform(1.5, 3.0)
        cycle = np.arange(1, n + 1)
        damage = (cycle / n) ** p  # 0 new .. 1 failed
        regime = rng.integers(0, len(REGIMES), n)
        speed0 = np.array([REGIMES[r][0] for r in regime])
        torque0 = np.array([REGIMES[r][1] for r in regime])
        speed = speed0 * (1 + rng.normal(0, 0.01, n))
        torque = torque0 * (1 + rng.normal(0, 0.02, n))
        load = torque * speed / (REGIMES[0][0] * REGIMES[0][1])  # 1.0 in regime 0
        air = 298.0 + rng.normal(0, 0.3) + np.cumsum(rng.normal(0, 0.03, n))
        rise = 9.0 + 2.0 * (load - 1.0) + rng.normal(0, 0.2)  # process above ambient
        vib = 1.1 + 0.0004 * (speed - 1500.0) + 0.3 * (load - 1.0) + rng.normal(0, 0.05)
        if mode == "bearing":
            vib = vib + 3.0 * damage ** 2 + 0.8 * damage
            extra_current = 0.8 * damage
        else:
            rise = rise + 9.0 * damage
            extra_current = 0.2 * damage
        power_w = torque * speed * 2 * math.pi / 60
        parts.append({
            "unit": np.full(n, name), "cycle": cycle, "regime": regime,
            "air_temp_k": air + rng.normal(0, 0.2, n),
            "process_temp_k": air + rise + rng.normal(0, 0.4, n),
            "speed_rpm": speed, "torque_nm": torque,
            "vibration_rms_mm_s": vib + rng.normal(0, 0.12, n),
            "current_a": power_w / _VOLT_PF * (1 + 0.02 * rng.normal()) + extra_current + rng.normal(0, 0.1, n),
            "failure_mode": np.full(n, mode),
        })
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return Fleet(cat["unit"], cat["cycle"], cat["regime"], {s: cat[s].astype(np.float64) for s in SENSORS},
                 cat["failure_mode"], life)


# A live run-to-failure machine (the demo's): units live this many cycles, read this
# many times a cycle. The demo's RUL bundle is trained on exactly this.
LIVE_LIFE_CYCLES = (150, 350)
LIVE_READINGS_PER_CYCLE = 5
# Measurement noise a sensor adds to each reading it takes within a cycle.
READING_NOISE = {"air_temp_k": 0.2, "process_temp_k": 0.4, "speed_rpm": 15.0, "torque_nm": 0.8,
                 "vibration_rms_mm_s": 0.12, "current_a": 0.1}


def expand_cycles(fleet: Fleet, per_cycle: int, rng: np.random.Generator) -> Fleet:
    """Each cycle read ``per_cycle`` times, every reading with its own measurement
    noise: a machine's sensors sample many times per cycle, so a live stream emits
    readings faster than the machine wears. RUL stays counted in cycles."""
    if per_cycle < 1:
        raise ValueError("per_cycle must be at least 1")
    idx = np.repeat(np.arange(len(fleet.unit)), per_cycle)
    sensors = {s: v[idx] + rng.normal(0.0, READING_NOISE[s], len(idx)) for s, v in fleet.sensors.items()}
    return Fleet(fleet.unit[idx], fleet.cycle[idx], fleet.regime[idx], sensors, fleet.failure_mode[idx], fleet.life)


def write_csv(fleet: Fleet, path: Path) -> Path:
    """The fleet in the builder's run-to-failure shape: ``unit``, ``cycle``, ``regime``,
    the sensors and ``failure_mode``, one row per unit and cycle."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        sensors = [fleet.sensors[s] for s in SENSORS]
        for i in range(len(fleet.unit)):
            w.writerow([fleet.unit[i], int(fleet.cycle[i]), int(fleet.regime[i]),
                        *(f"{c[i]:.4f}" for c in sensors), fleet.failure_mode[i]])
    return path
