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
from serve_ml.bundles.scoring import score_group
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
    hotpath.add_figures(rep, catalog.root)
    return rep
