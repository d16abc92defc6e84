"""A sensor simulator modelled on the AI4I 2020 predictive-maintenance data.

AI4I's physics: air temperature is a random walk around 300 K (sd 2 K), process
temperature sits about 10 K above it, power = torque x angular speed, and tool wear
grows with time until the tool is changed. On top of AI4I's five signals the
simulator adds the two that factories actually stream as well: vibration RMS (which
grows with tool wear and speed) and motor current (proportional to mechanical
power). Fault profiles break those physical relations the way the AI4I failure
modes describe:

* ``overstrain``: torque far above the machine's norm at low speed (OSF);
* ``heat_dissipation``: cooling fails, process-air temperature gap collapses (HDF);
* ``power_failure``: supply fault, current no longer matches mechanical power (PWF);
* ``tool_wear``: tool used past its change interval, vibration rises sharply (TWF).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PROFILES = ("normal", "overstrain", "heat_dissipation", "power_failure", "tool_wear")
PROFILE_LABEL = {"normal": "none", "overstrain": "OSF", "heat_dissipation": "HDF",
                 "power_failure": "PWF", "tool_wear": "TWF"}

THERMAL = ("air_temp_k", "process_temp_k")
MECHANICAL = ("speed_rpm", "torque_nm", "tool_wear_min", "vibration_rms_mm_s", "current_a")
ALL_FEATURES = THERMAL + MECHANICAL
_VOLT_PF = math.sqrt(3) * 400.0 * 0.85  # 3-phase 400 V motor at power factor 0.85
LIVE_WALK_READINGS = 512
"""Consecutive readings the live simulator (``pipelines.simulator``) draws from one
walk of the air temperature before it starts another."""


@dataclass(frozen=True)
class MachineSpec:
    """Operating point of one machine: nominal torque and speed set its power class."""

    torque_nm: float = 40.0
    speed_rpm: float = 1500.0

    @classmethod
    def for_power(cls, power: str) -> MachineSpec:
        kw = float(power.lower().removesuffix("kw"))
        speed = 1500.0
        return cls(torque_nm=kw * 0.85 * 1000 / (speed * 2 * math.pi / 60), speed_rpm=speed)


def simulate(
    n: int,
    *,
    spec: MachineSpec,
    profile: str = "normal",
    rng: np.random.Generator,
    wear_start: float = 0.0,
) -> dict[str, np.ndarray]:
    """``n`` consecutive readings of one machine, as float64 columns."""
    if profile not in PROFILES:
        raise ValueError(f"unknown fault profile {profile!r}; choose from {', '.join(PROFILES)}")
    air = 300.0 + np.cumsum(rng.normal(0, 0.05, n)) + rng.normal(0, 0.3)
    air = 300.0 + np.clip(air - 300.0, -6, 6)
    process = air + 10.0 + rng.normal(0, 0.5, n)
    torque = np.clip(rng.normal(spec.torque_nm, spec.torque_nm * 0.05, n), 3.0, None)
    speed = rng.normal(spec.speed_rpm, 40.0, n)
    wear = (wear_start + np.arange(n) * 0.25) % 220.0
    if profile == "heat_dissipation":
        process = air + rng.normal(4.0, 0.6, n)
        speed = speed - 150.0
    elif profile == "overstrain":
        torque = torque * 1.7
        speed = speed * 0.8
    elif profile == "tool_wear":
        wear = rng.uniform(225.0, 260.0, n)
    power_w = torque * speed * 2 * math.pi / 60
    current = power_w / _VOLT_PF + rng.normal(0, 0.15, n)
    vibration = 1.2 + 0.006 * wear + 0.0008 * (speed - 1500.0) + rng.normal(0, 0.1, n)
    if profile == "power_failure":
        current = current * rng.uniform(0.35, 0.55, n)
    elif profile == "tool_wear":
        vibration = vibration + rng.normal(2.5, 0.3, n)
    elif profile == "overstrain":
        vibration = vibration + rng.normal(1.0, 0.2, n)
    return {
        "air_temp_k": air, "process_temp_k": process, "speed_rpm": speed, "torque_nm": torque,
        "tool_wear_min": wear, "vibration_rms_mm_s": vibration, "current_a": current,
    }


def simulate_dataset(
    n_normal: int, n_per_fault: int, *, spec: MachineSpec, seed: int, walk_readings: int | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A labelled training set: columns and a label per row (``none`` or a fault code).

    ``walk_readings``: draw the normal rows as consecutive walks of that many
    readings, each from a fresh air temperature, as the live simulator does
    (:data:`LIVE_WALK_READINGS`). With one long walk (None) the air temperature
    covers only the stretch that walk wandered through, and a gate trained on it
    flags live readings outside that stretch many times more often than its
    held-out rows say."""
    if walk_readings is not None and walk_readings < 1:
        raise ValueError(f"walk_readings must be at least 1, not {walk_readings}")
    rng = np.random.default_rng(seed)
    parts, labels = [], []
    for profile in PROFILES:
        k = n_normal if profile == "normal" else n_per_fault
        wear = rng.uniform(0, 200)
        if profile == "normal" and walk_readings is not None:
            walks = []
            for start in range(0, k, walk_readings):
                walks.append(simulate(min(walk_readings, k - start), spec=spec, rng=rng, wear_start=wear))
                wear = float(walks[-1]["tool_wear_min"][-1])
            parts.append({f: np.concatenate([w[f] for w in walks]) for f in walks[0]})
        else:
            parts.append(simulate(k, spec=spec, profile=profile, rng=rng, wear_start=wear))
        labels.append(np.full(k, PROFILE_LABEL[profile]))
    cols = {f: np.concatenate([p[f] for p in parts]) for f in ALL_FEATURES}
    return cols, np.concatenate(labels)
