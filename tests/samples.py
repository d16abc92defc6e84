"""Sample readings the tests share: simulated rows of every shape the scorers meet."""

from __future__ import annotations

import math

import numpy as np

from serve_ml.bundles.batch import Reading
from serve_ml.bundles.simulation import MECHANICAL, THERMAL, MachineSpec, simulate


def sim_rows(profile: str, n: int, power: str = "7.5kW", seed: int = 5) -> list[dict[str, float]]:
    cols = simulate(n, spec=MachineSpec.for_power(power), profile=profile, rng=np.random.default_rng(seed))
    return [{k: float(v[i]) for k, v in cols.items()} for i in range(n)]


def mixed_power_rows(n: int) -> list[dict[str, float]]:
    """Half 5.5 kW-range machines, half 7.5 kW, interleaved, with two faults."""
    out = []
    for k, power in enumerate(("5.5kW", "7.5kW")):
        cols = simulate(n // 2, spec=MachineSpec.for_power(power), profile="overstrain" if k else "normal",
                        rng=np.random.default_rng(k))
        out.append([{f: float(v[i]) for f, v in cols.items()} for i in range(n // 2)])
    return [r for pair in zip(*out, strict=True) for r in pair]


def mixed_readings(n: int, seed: int) -> list[Reading]:
    """Several equipment and powers, full and single-modality readings, pinned and
    unknown versions, unknown equipment, non-finite values: every group shape."""
    rng = np.random.default_rng(seed)
    out = []
    for power in ("5.5kW", "7.5kW"):
        cols = simulate(n, spec=MachineSpec.for_power(power), profile="normal", rng=rng)
        for i in range(n):
            f = {k: float(v[i]) for k, v in cols.items()}
            kind = rng.integers(0, 10)
            if kind == 0:
                f = {k: f[k] for k in THERMAL}
            elif kind == 1:
                f = {k: f[k] for k in MECHANICAL}
            elif kind == 2:
                f[next(iter(f))] = math.nan
            elif kind == 3:
                f["torque_nm"] = math.inf
            eq = ("press-02", "pump-03", "no-such-machine")[int(rng.integers(0, 3)) if kind != 4 else 0]
            version = "9.9.9" if kind == 5 else None
            out.append(Reading(eq, f, None if kind == 6 else power, version))
    order = rng.permutation(len(out))
    return [out[i] for i in order]
