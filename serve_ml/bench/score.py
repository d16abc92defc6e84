"""``bench score``: the in-process floor. Rows/s of scoring a demo bundle directly in
Python, no HTTP, at batch sizes 1, 64 and 4096: once on the model core (columns in,
arrays out) and once through ``ScoringService.score_bulk`` (readings in, the bulk
endpoint's JSON out: what the servers run for row bulk). Then the hot-path audit
(``hotpath.py``): file reads, bundle validation and per-row Python work in warm
requests, each against 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serve_ml.bench import hotpath
from serve_ml.bench.common import Figure, Report, time_it
from serve_ml.bundles.batch import Reading, ReadingColumns
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.loader import Bundle
from serve_ml.bundles.scoring import score_group
from serve_ml.bundles.simulation import MachineSpec, simulate
from serve_ml.scoring.service import ScoringService

BATCHES = (1, 64, 4096)


def demo_rows(catalog: Catalog, equipment_id: str, power: str, n: int) -> list[dict[str, float]]:
    """``n`` realistic feature rows, cycled from the bundle's recorded warm-up rows."""
    b = catalog.live_bundle(equipment_id, power)
    rows = b.warmup.point_rows() if b.warmup else []
    if not rows:
        raise SystemExit(f"{equipment_id}/{power} has no warm-up rows to benchmark with")
    return [rows[i % len(rows)] for i in range(n)]


def run(root: Path, *, equipment_id: str = "press-02", power: str = "7.5kW",
        repeats: int = 5, enable_xgb: bool = False) -> Report:
    service = ScoringService(root, enable_xgb=enable_xgb)
    catalog = service.catalog
    bundle = catalog.live_bundle(equipment_id, power)
    rep = Report(f"bench score: in-process scorer, {equipment_id}/{power}, xgb={'on' if enable_xgb else 'off'}")
    for n in BATCHES:
        rows = demo_rows(catalog, equipment_id, power, n)
        cols = {f: np.array([r[f] for r in rows]) for f in rows[0]}
        readings = ReadingColumns.of_readings([Reading(equipment_id, r, power) for r in rows])
        core, full = [], []
        for _ in range(repeats):  # alternate the two so drift hits both alike
            core.append(n / time_it(lambda c=cols, k=n: score_group(bundle, {f: v.copy() for f, v in c.items()}, k,  # type: ignore[misc]
                                                                    enable_xgb=enable_xgb)))
            full.append(n / time_it(lambda r=readings: service.score_bulk(r)))  # type: ignore[misc]
        rep.add(Figure(f"model core, batch {n}", "rows/s", core))
        rep.add(Figure(f"row bulk (score_bulk), batch {n}", "rows/s", full))
    if bundle.classifier is not None and bundle.modalities:
        _cascade(rep, bundle, power, repeats)
    hotpath.add_figures(rep, catalog.root)
    return rep


def _cascade(rep: Report, bundle: Bundle, power: str, repeats: int, n: int = 4096, faulty: float = 0.02) -> None:
    """The gate -> classify cascade against the classifier on every row, on a batch
    that looks like a healthy fleet: 64 machines' latest 64 readings each, ``faulty``
    of the rows from a fault profile."""
    rng = np.random.default_rng(0)
    spec = MachineSpec.for_power(power)
    k = int(n * faulty)
    parts = [simulate(64, spec=spec, rng=rng, wear_start=rng.uniform(0, 200)) for _ in range((n - k) // 64)]
    parts.append(simulate(n - k - 64 * len(parts), spec=spec, rng=rng))
    parts.append(simulate(k, spec=spec, profile="overstrain", rng=rng))
    cols = {f: np.concatenate([p[f] for p in parts]) for f in bundle.known_features if f in parts[0]}
    gated = score_group(bundle, dict(cols), n, enable_xgb=True, cascade="gate_then_classify").classified_rows()
    times: dict[str, list[float]] = {"always": [], "gate_then_classify": []}
    for _ in range(repeats):  # alternated, so drift hits both alike
        for mode, out in times.items():
            out.append(time_it(lambda m=mode: score_group(bundle, {f: v.copy() for f, v in cols.items()}, n,  # type: ignore[misc]
                                                          enable_xgb=True, cascade=m)))
    for mode, secs in times.items():
        rep.add(Figure(f"classifier {mode}, batch {n}, {faulty:.0%} fault rows ({gated} gated)", "rows/s",
                       [n / t for t in secs]))
    rep.add(Figure("cascade speed-up (gate_then_classify / always)", "ratio",
                   [a / c for a, c in zip(times["always"], times["gate_then_classify"], strict=True)]))
