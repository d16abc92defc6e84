"""ScoringService: a catalog of bundles plus scoring, reloading and description.

The same object serves inside an equipment replica and inside the ingress (the
single-row fast path), so both paths give identical answers and record the same
metrics. Reloads build a new catalog beside the live one and swap a reference:
a call that already holds the old catalog finishes on it.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from serve_ml.bundles.batch import Reading, ReadingColumns, Result, in_order, score_groups
from serve_ml.bundles.catalog import Catalog, Override
from serve_ml.bundles.columns import CLASSIFIER_S, dumps, score_columns
from serve_ml.bundles.report import load_evaluation
from serve_ml.bundles.rowjson import encode_items
from serve_ml.core.errors import EquipmentNotFound, ServeMLError, VersionNotFound
from serve_ml.scoring.metrics import Metrics, NoMetrics


def settle_heap(*, collect: bool) -> None:
    """Put everything alive now (modules, Ray, torch, the loaded bundles) out of the
    cyclic collector's reach (``gc.freeze``).

    Scoring allocates many short-lived, acyclic objects (readings, per-row result
    dicts); every full collection they trigger otherwise walks the whole long-lived
    heap again. Measured in the stream scorer: 60 % of its CPU per message.
    """
    if collect:
        gc.collect()
    gc.freeze()


# For a process whose work is scoring batches of thousands of readings (the stream
# scorer). At CPython's default of 700, the young generation is collected every few
# hundred readings: each collection walks the batch's objects still in use and
# promotes them, so they are walked again a generation up. At 50,000 most of a
# batch's objects are freed before a collection sees them. Measured with
# ``serve-ml bench stream``: the scorers' cyclic collection fell from about 12 % of
# their CPU to under 1 %, and throughput rose about 15 % (BENCHMARKS.md). A threshold
# of 10**8 (the collector all but off) was no faster.
BULK_GC_THRESHOLDS = (50_000, 20, 10)


def settle_for_bulk() -> None:
    """:func:`settle_heap`, then :data:`BULK_GC_THRESHOLDS` for the whole process."""
    settle_heap(collect=True)
    gc.set_threshold(*BULK_GC_THRESHOLDS)


class ScoringService:
    def __init__(
        self,
        root: Path,
        *,
        enable_xgb: bool,
        equipment_ids: set[str] | None = None,
        live_overrides: Mapping[tuple[str, str], Override] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.root = Path(root)
        self.enable_xgb = enable_xgb
        self.equipment_ids = equipment_ids
        self.metrics = metrics or NoMetrics()
        self._lock = threading.Lock()  # serialises reloads, never scoring
        self.generation = 0
        self.catalog = Catalog.scan(self.root, equipment_ids=equipment_ids, live_overrides=live_overrides)
        self.metrics.catalog(self.catalog.bundles.values(), self.catalog.live, {})
        settle_heap(collect=True)

    def score(self, readings: Sequence[Reading]) -> list[Result]:
        catalog = self.catalog  # one consistent catalog for the whole call
        t0 = time.perf_counter()
        groups = list(score_groups(catalog, readings, enable_xgb=self.enable_xgb))
        self.metrics.scored_groups(catalog.live_equipment, groups, (time.perf_counter() - t0) * 1e3)
        return in_order(len(readings), groups)

    def score_bulk(self, readings: ReadingColumns) -> tuple[int, bytes]:
        """Row bulk scoring: ``(error count, JSON array of one item per reading)``, in
        input order, ready to send; no per-reading dicts on the way."""
        catalog = self.catalog
        t0 = time.perf_counter()
        groups = list(score_groups(catalog, readings, enable_xgb=self.enable_xgb))
        elapsed_ms = (time.perf_counter() - t0) * 1e3
        self.metrics.scored_groups(catalog.live_equipment, groups, elapsed_ms)
        return encode_items(readings.n, groups)

    def score_columns(self, equipment_id: str, power: str | None, version: str | None,
                      columns: Mapping[str, np.ndarray], n: int) -> tuple[int, bytes]:
        """Columnar bulk scoring: ``(HTTP status, JSON body)``, ready to send. Errors
        are returned, not raised, so they cross a handle hop unchanged."""
        catalog = self.catalog
        t0 = time.perf_counter()
        try:
            result = score_columns(catalog, equipment_id, power, version, columns, n, enable_xgb=self.enable_xgb)
        except ServeMLError as exc:
            return exc.status_code, orjson.dumps(exc.to_dict())
        self.metrics.scored_columns(result, (time.perf_counter() - t0) * 1e3, result.pop(CLASSIFIER_S))
        return 200, dumps(result)

    def reload(
        self, generation: int, live_overrides: Mapping[tuple[str, str], Override] | None = None
    ) -> dict[str, Any]:
        """Rescan the root; swap in the new catalog; report what changed.

        Never goes back: a reload for an older generation than the one in force
        (two management calls racing, each reloading what it read) changes nothing,
        so what is served, and what responses and gauges report, only moves forward."""
        with self._lock:
            old = self.catalog
            if generation < self.generation:
                return diff_catalogs(old, old)
            new = Catalog.scan(self.root, equipment_ids=self.equipment_ids,
                               live_overrides=live_overrides, reuse=old.bundles)
            self.catalog = new
            self.generation = generation
            self.metrics.catalog(new.bundles.values(), new.live, old.live)
            settle_heap(collect=False)  # the new bundles are long-lived too
            return diff_catalogs(old, new)

    def refresh_gauges(self) -> None:
        """Re-assert the catalog gauges. Ray's metrics agent drops a series when some
        process that reported it exits, and a gauge set once is never sent again."""
        catalog = self.catalog
        self.metrics.catalog(catalog.bundles.values(), catalog.live, catalog.live)

    def describe(self) -> list[dict[str, Any]]:
        return describe_catalog(self.catalog)

    def report(self, equipment_id: str, power: str, version: str) -> dict[str, Any]:
        """One version's report: its description, held-out histograms per gate and RUL
        pairs (read from the bundle's evaluation file: not a hot path)."""
        catalog = self.catalog
        bundle = catalog.bundles.get((equipment_id, power, version))
        if bundle is None:
            if equipment_id not in catalog.equipment_ids():
                raise EquipmentNotFound(equipment_id, catalog.equipment_ids())
            raise VersionNotFound(equipment_id, power, version,
                                  [v for e, p, v in catalog.bundles if (e, p) == (equipment_id, power)])
        evaluation = load_evaluation(bundle)
        return {**describe_bundle(catalog, (equipment_id, power, version)),
                "evaluation": None if evaluation is None else evaluation.model_dump()}


def diff_catalogs(old: Catalog, new: Catalog) -> dict[str, Any]:
    def fmt(key: tuple[str, str, str]) -> str:
        return "/".join(key)

    added = [fmt(k) for k in new.bundles if k not in old.bundles]
    removed = [fmt(k) for k in old.bundles if k not in new.bundles]
    updated = [fmt(k) for k, b in new.bundles.items() if k in old.bundles and old.bundles[k].digest != b.digest]
    unchanged = [fmt(k) for k, b in new.bundles.items() if k in old.bundles and old.bundles[k].digest == b.digest]
    live_changes = [
        {"equipment_id": eq, "power": p, "from": old.live.get((eq, p)), "to": v}
        for (eq, p), v in new.live.items() if old.live.get((eq, p)) != v
    ] + [{"equipment_id": eq, "power": p, "from": v, "to": None}
         for (eq, p), v in old.live.items() if (eq, p) not in new.live]
    return {
        "added": sorted(added), "updated": sorted(updated), "removed": sorted(removed),
        "unchanged": sorted(unchanged),
        "rejected": [{"path": r.path, "reason": r.reason} for r in new.rejected],
        "live_changes": live_changes,
    }


def describe_catalog(catalog: Catalog) -> list[dict[str, Any]]:
    return [describe_bundle(catalog, key) for key in sorted(catalog.bundles)]


def describe_bundle(catalog: Catalog, key: tuple[str, str, str]) -> dict[str, Any]:
    eq, power, ver = key
    b = catalog.bundles[key]
    m = b.manifest
    return {
        "equipment_id": eq, "power": power, "model_version": ver,
        "live": catalog.live.get((eq, power)) == ver,
        "pinned": catalog.live.get((eq, power)) == ver and catalog.pinned.get((eq, power), False),
        "power_range_kw": list(m.power_range_kw), "default_power": m.default_power,
        "modalities": {n: {"features": mod.features, "threshold": mod.threshold}
                       for n, mod in m.modalities.items()},
        "features": m.all_features,
        "classifier": ({"features": m.classifier.features, "classes": m.classifier.classes}
                       if m.classifier else None),
        "window_steps": max((mod.window_steps for mod in b.modalities.values()), default=1),
        "rul": ({"features": m.rul.features, "unit": m.rul.unit} if m.rul else None),
        "sha256": b.digest,
        "provenance": m.provenance.model_dump(),
    }
