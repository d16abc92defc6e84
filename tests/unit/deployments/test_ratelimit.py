"""Per-client rate limits: the token bucket's arithmetic, and the API refusing a
client over its rate with 429 and Retry-After before reading the body, while
another client and the other routes go on."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serve_ml.core.settings import Settings
from serve_ml.deployments.local import create_local_app
from serve_ml.deployments.ratelimit import RateLimited, RateLimiter, rate_limiter

API = "/api/v1/serve-ml"
READING = {"equipment_id": "pump-03", "power": "5.5kW", "features": {"air_temp_k": 300.0, "process_temp_k": 310.0}}


def test_a_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    for _ in range(3):
        limiter.take("c", now=100.0)
    with pytest.raises(RateLimited) as over:
        limiter.take("c", now=100.0)
    assert over.value.retry_after_s == 1 and over.value.status_code == 429
    limiter.take("c", now=100.5)  # half a second at 2/s: one token back
    with pytest.raises(RateLimited):
        limiter.take("c", now=100.5)
    limiter.take("other", now=100.5)  # buckets are per client
    for _ in range(3):
        limiter.take("c", now=200.0)  # refilled, never beyond the burst
    with pytest.raises(RateLimited):
        limiter.take("c", now=200.0)


def test_clients_are_told_apart_by_token_without_keeping_it() -> None:
    a = RateLimiter.client_key("Bearer secret-token-one", "10.0.0.1")
    assert a == RateLimiter.client_key("Bearer secret-token-one", "10.0.0.2") and "secret" not in a
    assert a != RateLimiter.client_key("Bearer secret-token-two", "10.0.0.1")
    assert RateLimiter.client_key(None, "10.0.0.1") != RateLimiter.client_key(None, "10.0.0.2")


def test_off_by_default_and_one_seconds_worth_of_burst() -> None:
    assert rate_limiter(0, 0) is None and Settings().rate_limit_per_s == 0
    assert rate_limiter(5, 0).burst == 5  # type: ignore[union-attr]


def test_the_api_answers_429_with_retry_after_over_the_rate(demo_root: Path) -> None:
    c = TestClient(create_local_app(Settings(root=demo_root, rate_limit_per_s=0.5, rate_limit_burst=2)))
    first = [c.post(f"{API}/predict", json=READING, headers={"Authorization": "Bearer client-one-token-01"})
             for _ in range(3)]
    assert [r.status_code for r in first] == [200, 200, 429]
    assert first[2].headers["retry-after"] == "2" and "rate limit of 0.5 requests/s" in first[2].json()["message"]
    other = c.post(f"{API}/predict", json=READING, headers={"Authorization": "Bearer client-two-token-01"})
    assert other.status_code == 200
    v2 = c.post("/v2/models/pump-03/infer", json={}, headers={"Authorization": "Bearer client-one-token-01"})
    assert v2.status_code == 429 and v2.json()["code"] == "RateLimited"  # the protocol's shape on /v2
    assert c.get(f"{API}/bundles").status_code == 200  # reads are not counted
