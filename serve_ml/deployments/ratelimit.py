"""Per-client rate limits on scoring: a token bucket per client, refilled at
``rate_per_s`` up to ``burst``; a request that finds the bucket empty is refused
with 429 and ``Retry-After`` (the seconds until a token is back) before its body is
read. Off unless configured.

A client is its bearer token (hashed: the token itself is never kept) or, without
one, its address. Buckets live in each ingress replica: with N replicas the cluster
admits up to N times the rate from a client whose requests are spread over them.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from serve_ml.core.errors import ServeMLError

MAX_CLIENTS = 100_000
"""Buckets kept (least recently used dropped first): bounded memory whatever the
number of distinct clients; a dropped client starts again with a full bucket."""


class RateLimited(ServeMLError):
    status_code = 429

    def __init__(self, retry_after_s: int, rate_per_s: float) -> None:
        super().__init__(f"rate limit of {rate_per_s:g} requests/s for this client exceeded; retry after "
                         f"{retry_after_s}s")
        self.retry_after_s = retry_after_s


@dataclass
class RateLimiter:
    rate_per_s: float
    burst: int
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)  # tokens, at

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1:
            raise ValueError("a rate limit needs rate_per_s > 0 and burst >= 1")

    @staticmethod
    def client_key(authorization: str | None, address: str) -> str:
        if authorization:
            return "t:" + hashlib.sha256(authorization.encode("latin-1", "replace")).hexdigest()[:32]
        return "a:" + address

    def take(self, key: str, now: float | None = None) -> None:
        """Spend one token of ``key``'s bucket, or raise RateLimited."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise RateLimited(max(1, math.ceil((1.0 - tokens) / self.rate_per_s)), self.rate_per_s)
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)


def rate_limiter(rate_per_s: float, burst: int) -> RateLimiter | None:
    """The limiter the settings ask for; None when ``rate_per_s`` is 0 (off)."""
    if rate_per_s <= 0:
        return None
    return RateLimiter(rate_per_s, burst or max(1, math.ceil(rate_per_s)))
