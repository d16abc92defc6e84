"""Counters are summed in the process and handed to Ray in one call per series and
flush, not one per request; the background flush does it without being asked."""

from __future__ import annotations

import time
from collections import Counter as Tally
from typing import Any

from serve_ml.scoring.metrics import FLUSH_S, Metrics


class Recorded:
    """Stands in for a Ray counter: what was handed to it, call by call."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, dict[str, str]]] = []

    def inc(self, k: float, tags: dict[str, str]) -> None:
        self.calls.append((k, tags))


class Observed(Recorded):
    def observe(self, v: float, tags: dict[str, str]) -> None:
        self.calls.append((v, tags))


def _metrics() -> Metrics:
    m = Metrics()  # Ray's metric objects can be built outside a Ray worker
    for name in ("requests", "rows", "anomalies", "classifier"):
        setattr(m, name, Recorded())
    for name in ("request_latency", "scoring_latency", "classifier_latency"):
        setattr(m, name, Observed())
    return m


def test_counts_are_summed_per_series_until_a_flush() -> None:
    m = _metrics()
    for _ in range(500):
        m.request("/predict", 200, 1.5)
        m.record(Tally({("press-02", "normal"): 1}), Tally({("press-02", "thermal"): 0}),
                 Tally({("press-02", "ran"): 1}), 0.4)
    m.request("/predict", 404, 0.2)
    rows: Any = m.rows
    requests: Any = m.requests
    latency: Any = m.request_latency
    m.flush()
    assert rows.calls == [(500, {"equipment": "press-02", "outcome": "normal"})]
    assert sorted(requests.calls, key=lambda c: c[1]["status"]) == [
        (500, {"endpoint": "/predict", "status": "200"}), (1, {"endpoint": "/predict", "status": "404"})]
    assert len(latency.calls) == 501  # histograms: every observation, as it happens
    m.flush()
    assert len(rows.calls) == 1  # nothing new, nothing handed over


def test_the_background_flush_hands_counts_over_unasked() -> None:
    m = _metrics()
    m.request("/health/live", 200, 0.1)
    requests: Any = m.requests
    deadline = time.monotonic() + 10 * FLUSH_S
    while time.monotonic() < deadline and not requests.calls:
        time.sleep(0.05)
    assert requests.calls == [(1, {"endpoint": "/health/live", "status": "200"})]
