"""How the ingress translates what an equipment deployment's handle raises: a replica
that died mid-call is answered by the ingress itself (same scoring code) and counted;
a full queue is a 503 with Retry-After; a slow replica a 504. The handle here is a
stand-in that raises what Ray raises; the fault suite kills real replicas, but there
Ray never surfaced the error (requests waited for the replacement), so this branch
needs its own test."""

from __future__ import annotations

from collections.abc import Generator
from types import SimpleNamespace
from typing import Any

import pytest
from ray.exceptions import RayActorError
from ray.serve._private.common import DeploymentID
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from serve_ml.core.errors import GatewayTimeout, Overloaded
from serve_ml.deployments.ingress import Ingress


class _Response:
    def __init__(self, exc: BaseException | None, value: Any = None, hang: bool = False) -> None:
        self.exc, self.value, self.hang, self.cancelled = exc, value, hang, False

    def __await__(self) -> Generator[Any, None, Any]:
        import asyncio

        if self.hang:
            yield from asyncio.sleep(3600).__await__()
        if self.exc is not None:
            raise self.exc
        return self.value
        yield  # pragma: no cover - makes this a generator

    def cancel(self) -> None:
        self.cancelled = True


class _Handle:
    """Answers every method call with one prepared response."""

    def __init__(self, response: _Response) -> None:
        self.response = response

    def __getattr__(self, _method: str) -> SimpleNamespace:
        return SimpleNamespace(remote=lambda *_args: self.response)


class _Metrics:
    def __init__(self) -> None:
        self.fallbacks: list[str] = []

    def replica_fallback(self, eq: str) -> None:
        self.fallbacks.append(eq)


def ingress_with(response: _Response, deadline_s: float = 5.0) -> SimpleNamespace:
    return SimpleNamespace(handles={"press-02": _Handle(response)}, metrics=_Metrics(),
                           args=SimpleNamespace(request_timeout_s=0.2, retry_after_s=7,
                                                equipment_deadline_s=deadline_s))


async def call(fake: SimpleNamespace) -> Any:
    return await Ingress.func_or_class._call(fake, "press-02", "score_wire", b"payload", local=lambda: "scored by the ingress")


@pytest.mark.parametrize("exc", [RayActorError(error_msg="replica killed"),
                                 DeploymentUnavailableError(DeploymentID("press-02", "serve-ml"))])
async def test_dead_or_unavailable_replica_is_scored_in_the_ingress(exc: BaseException) -> None:
    fake = ingress_with(_Response(exc))
    assert await call(fake) == "scored by the ingress"
    assert fake.metrics.fallbacks == ["press-02"]


async def test_a_live_replica_answers_and_nothing_is_counted() -> None:
    fake = ingress_with(_Response(None, value="scored by the replica"))
    assert await call(fake) == "scored by the replica"
    assert fake.metrics.fallbacks == []


async def test_full_queue_is_overloaded_with_retry_after() -> None:
    fake = ingress_with(_Response(BackPressureError(num_queued_requests=9, max_queued_requests=8)))
    with pytest.raises(Overloaded) as info:
        await call(fake)
    assert info.value.status_code == 503 and info.value.retry_after_s == 7
    assert fake.metrics.fallbacks == []


async def test_slow_replica_times_out_and_the_call_is_cancelled() -> None:
    response = _Response(None, hang=True)
    with pytest.raises(GatewayTimeout, match="press-02"):
        await call(ingress_with(response))
    assert response.cancelled


async def test_a_replica_that_hangs_past_the_deadline_is_given_up_and_scored_here() -> None:
    """What a replica on a lost node does: no error, no answer, until Ray notices."""
    response = _Response(None, hang=True)
    fake = ingress_with(response, deadline_s=0.05)
    assert await call(fake) == "scored by the ingress"
    assert response.cancelled and fake.metrics.fallbacks == ["press-02"]
