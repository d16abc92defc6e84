"""Prometheus metrics recorded by every replica.

Replicas are separate processes, so metrics go through Ray's metrics agent, which
aggregates all replicas of a node and serves them at the node's metrics export
port (``serve-ml up`` pins it; ``serve-ml status`` prints it). Ray prefixes every
name with ``ray_``, so ``serve_ml_rows_scored_total`` is scraped as
``ray_serve_ml_rows_scored_total``.

Label cardinality is bounded: the ``equipment`` label only ever takes ids that
have a loaded bundle; anything else is recorded as ``unknown``.

Counters are summed in the process and handed to Ray every ``FLUSH_S`` by a
background thread: each hand-off costs as much as scoring a small part of a reading
(a single-row predict would make six), and Prometheus scrapes every few seconds anyway.
Histograms are recorded per observation. A process that dies loses at most its last
``FLUSH_S`` of counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from serve_ml.bundles.loader import Bundle
from serve_ml.bundles.scoring import GroupScore
from serve_ml.core.errors import ServeMLError

# Prometheus wants base units: latencies are recorded in seconds (callers pass ms).
LATENCY_BUCKETS_S = [0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]
UNKNOWN = "unknown"
FLUSH_S = 1.0
log = logging.getLogger("serve_ml.metrics")


class Metrics:
    """Records to Ray's metrics agent. Construct inside a Ray worker, never at import."""

    def __init__(self) -> None:
        from ray.util import metrics as m

        self.requests = m.Counter("serve_ml_requests", "HTTP requests by endpoint and status.",
                                  tag_keys=("endpoint", "status"))
        self.request_latency = m.Histogram("serve_ml_request_duration_seconds", "End-to-end request latency at the ingress.",
                                           boundaries=LATENCY_BUCKETS_S, tag_keys=("endpoint",))
        self.rows = m.Counter("serve_ml_rows_scored", "Readings scored, by equipment and outcome.",
                              tag_keys=("equipment", "outcome"))
        self.anomalies = m.Counter("serve_ml_anomalies", "Anomalous readings by equipment and modality.",
                                   tag_keys=("equipment", "modality"))
        self.classifier = m.Counter(
            "serve_ml_classifier_invocations", "Rows by what the classifier did: ran, skipped (none, or "
            "disabled), gate_passed (a gate_then_classify cascade's gate passed the row).",
            tag_keys=("equipment", "status"))
        self.classifier_latency = m.Histogram(
            "serve_ml_classifier_duration_seconds", "Time the classifier took in one scoring call.",
            boundaries=LATENCY_BUCKETS_S, tag_keys=("equipment",))
        self.scoring_latency = m.Histogram("serve_ml_scoring_duration_seconds", "Time spent scoring one call.",
                                           boundaries=LATENCY_BUCKETS_S, tag_keys=("equipment",))
        self.bundles_loaded = m.Gauge("serve_ml_bundles_loaded", "Valid bundles loaded by this replica.",
                                      tag_keys=("equipment",))
        self.live_version = m.Gauge("serve_ml_live_version_info", "1 for the live version of each power class.",
                                    tag_keys=("equipment", "power", "version"))
        self.swaps = m.Counter("serve_ml_swaps", "Catalog reloads that changed what is live.", tag_keys=("equipment",))
        self.replica_fallbacks = m.Counter(
            "serve_ml_replica_fallbacks", "Calls the ingress scored itself because the equipment replica died "
            "or none was ready.", tag_keys=("equipment",))
        self._pending: Tally[tuple[str, tuple[tuple[str, str], ...]]] = Tally()
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None

    def count(self, counter: str, k: int, tags: Mapping[str, str]) -> None:
        """Add ``k`` to the counter attribute named ``counter``, handed to Ray at the next flush."""
        if k <= 0:
            return
        key = (counter, tuple(tags.items()))
        with self._lock:
            self._pending[key] += k
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_forever, name="serve-ml-metrics", daemon=True)
                self._flusher.start()

    def flush(self) -> None:
        """Hand every summed count to Ray now."""
        with self._lock:
            pending, self._pending = self._pending, Tally()
        for (counter, tags), k in pending.items():
            getattr(self, counter).inc(k, dict(tags))

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_S)
            try:
                self.flush()
            except Exception:  # a metrics agent in trouble must not stop the counting
                log.exception("handing metrics to Ray failed")

    def request(self, endpoint: str, status: int, latency_ms: float) -> None:
        self.count("requests", 1, {"endpoint": endpoint, "status": str(status)})
        self.request_latency.observe(latency_ms / 1e3, {"endpoint": endpoint})

    def replica_fallback(self, equipment: str) -> None:
        self.replica_fallbacks.inc(1, {"equipment": equipment})

    def scored_columns(self, result: dict[str, Any], elapsed_ms: float, classifier_s: float = 0.0) -> None:
        """The same series as ``scored_groups``, counted from a columnar result's arrays
        (``classifier_s``: the classifier's share of the call)."""
        eq = result["equipment_id"]
        errors = len(result["errors"])
        anomalies = int(np.count_nonzero(result["anomaly"]))
        outcome = Tally({(eq, "anomaly"): anomalies, (eq, "normal"): result["rows"] - anomalies - errors,
                         (eq, "error"): errors})
        modal = Tally({(eq, name): int(np.count_nonzero(np.asarray(m["anomaly"]) & np.asarray(result["anomaly"])))
                       for name, m in result["modalities"].items() if "anomaly" in m})
        groups = result["classifier"] if isinstance(result["classifier"], list) else [result["classifier"]]
        clf: Tally[tuple[str, str]] = Tally()
        for g in groups:
            rows = result["rows"] - errors if len(groups) == 1 else len(g["rows"])
            if "classified" in g:
                ran = int(np.count_nonzero(g["classified"]))
                clf.update({(eq, "ran"): ran, (eq, "gate_passed"): rows - ran})
            else:
                clf[(eq, g["status"])] += rows
        self.record(+outcome, +modal, +clf, elapsed_ms, {eq: classifier_s})

    def scored_groups(self, known: Iterable[str], scored: Sequence[tuple[Sequence[int], GroupScore | ServeMLError]],
                      elapsed_ms: float) -> None:
        """Rows scored (normal, anomaly, error), anomalies per modality and classifier
        runs, counted per group from its arrays, for single and bulk readings alike.
        A group that failed as a whole counts under its equipment if that is known,
        else ``unknown``; rows with non-finite values count as errors of their group's
        equipment, as in ``scored_columns``."""
        known = set(known)
        outcome: Tally[tuple[str, str]] = Tally()
        modal: Tally[tuple[str, str]] = Tally()
        clf: Tally[tuple[str, str]] = Tally()
        timing: dict[str, float] = {}
        for idx, g in scored:
            if isinstance(g, ServeMLError):
                eq = g.detail.get("equipment_id", UNKNOWN)
                outcome[(eq if eq in known else UNKNOWN, "error")] += len(idx)
                continue
            eq = g.bundle.manifest.equipment_id
            ok = np.ones(g.n, dtype=bool)
            ok[list(g.bad_rows)] = False
            flagged = g.anomaly & ok
            anomalies, errors = int(np.count_nonzero(flagged)), len(g.bad_rows)
            outcome.update({(eq, "anomaly"): anomalies, (eq, "normal"): g.n - errors - anomalies, (eq, "error"): errors})
            for m in g.modalities:
                if m.present:
                    modal[(eq, m.name)] += int(np.count_nonzero(m.anomaly & flagged))  # type: ignore[operator]
            if not g.classifier_ran:
                clf[(eq, "skipped")] += g.n - errors
            else:
                ran = g.n - errors if g.classified is None else g.classified_rows()
                clf.update({(eq, "ran"): ran, (eq, "gate_passed"): g.n - errors - ran})
                timing[eq] = timing.get(eq, 0.0) + g.classifier_s
        self.record(+outcome, +modal, +clf, elapsed_ms, timing)

    def record(self, outcome: Tally[tuple[str, str]], modal: Tally[tuple[str, str]], clf: Tally[tuple[str, str]],
               elapsed_ms: float, classifier_s: Mapping[str, float] | None = None) -> None:
        for (eq, o), k in outcome.items():
            self.count("rows", k, {"equipment": eq, "outcome": o})
        for (eq, name), k in modal.items():
            self.count("anomalies", k, {"equipment": eq, "modality": name})
        for (eq, s), k in clf.items():
            self.count("classifier", k, {"equipment": eq, "status": s})
        for eq, seconds in (classifier_s or {}).items():
            if seconds > 0:
                self.classifier_latency.observe(seconds, {"equipment": eq})
        eqs = {eq for eq, _ in outcome}
        self.scoring_latency.observe(elapsed_ms / 1e3, {"equipment": next(iter(eqs)) if len(eqs) == 1 else "mixed"})

    def catalog(self, bundles: Iterable[Bundle], live: dict[tuple[str, str], str], old_live: dict) -> None:
        per_eq: Tally[str] = Tally(b.manifest.equipment_id for b in bundles)
        for eq, k in per_eq.items():
            self.bundles_loaded.set(k, {"equipment": eq})
        for (eq, power), ver in old_live.items():
            if live.get((eq, power)) != ver:
                self.live_version.set(0, {"equipment": eq, "power": power, "version": ver})
                self.swaps.inc(1, {"equipment": eq})
        for (eq, power), ver in live.items():
            self.live_version.set(1, {"equipment": eq, "power": power, "version": ver})


class NoMetrics(Metrics):
    """For code running outside Ray (unit tests, the plain-uvicorn baseline)."""

    def __init__(self) -> None:  # noqa: D107 - deliberately records nothing
        pass

    def count(self, counter: str, k: int, tags: Mapping[str, str]) -> None:
        pass

    def flush(self) -> None:
        pass

    def request(self, endpoint: str, status: int, latency_ms: float) -> None:
        pass

    def replica_fallback(self, equipment: str) -> None:
        pass

    def scored_columns(self, result: dict[str, Any], elapsed_ms: float, classifier_s: float = 0.0) -> None:
        pass

    def scored_groups(self, known: Iterable[str], scored: Sequence[tuple[Sequence[int], GroupScore | ServeMLError]],
                      elapsed_ms: float) -> None:
        pass

    def record(self, outcome: Tally[tuple[str, str]], modal: Tally[tuple[str, str]], clf: Tally[tuple[str, str]],
               elapsed_ms: float, classifier_s: Mapping[str, float] | None = None) -> None:
        pass

    def catalog(self, bundles: Iterable[Bundle], live: dict[tuple[str, str], str], old_live: dict) -> None:
        pass
