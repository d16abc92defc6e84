"""Prometheus metrics from every replica reach Ray's metrics agent endpoint."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.samples import sim_rows

pytestmark = pytest.mark.integration

EXPECTED = ("ray_serve_ml_requests_total", "ray_serve_ml_request_duration_seconds_bucket", "ray_serve_ml_rows_scored_total",
            "ray_serve_ml_anomalies_total", "ray_serve_ml_classifier_invocations_total",
            "ray_serve_ml_scoring_duration_seconds_bucket", "ray_serve_ml_bundles_loaded", "ray_serve_ml_live_version_info")


def test_metrics_exported(cluster, http: httpx.Client) -> None:
    readings = [{"equipment_id": "press-02", "features": f} for f in sim_rows("overstrain", 5)]
    http.post("/predict/bulk", json={"readings": readings})
    http.post("/predict", json=readings[0])
    http.post("/predict", json={"equipment_id": "no-such-machine", "features": {"a": 1.0}})
    url = f"http://127.0.0.1:{cluster.metrics_port}/metrics"
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline:
        text = httpx.get(url, timeout=10).text
        if all(name in text for name in EXPECTED) and 'equipment="press-02"' in text:
            break
        time.sleep(2)
    missing = [n for n in EXPECTED if n not in text]
    assert not missing, missing
    assert 'outcome="anomaly"' in text and 'modality="mechanical"' in text
    # an unknown id never becomes a label value (bounded cardinality)
    assert "no-such-machine" not in text
