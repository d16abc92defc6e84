"""The floor of Ray Serve's HTTP path for bulk requests, measured beside the real app.

A bare deployment (no FastAPI, no parsing, no scoring) that reads the request body and
answers a fixed, pre-encoded 1,000-row answer: everything Serve, HAProxy and uvicorn
cost per request on this machine, and nothing of ours. It runs in the same cluster
with the same Ray Serve flags, access log off like the ingress, so its rows/s bounds
what any handler can reach there. With the model run in the same replica on top of it
(the model core holds the GIL, so it cannot overlap), the bound is
``1 / (1 / floor + 1 / core)``: that is the ceiling the bulk target is set against.
"""

from __future__ import annotations

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

ROUTE = "/bench-floor"
APP_NAME = "bench-floor"


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64,
                  logging_config={"enable_access_log": False})
class Floor:
    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers = answers

    async def __call__(self, request: Request) -> Response:
        await request.body()  # received in full, as the real route does
        return Response(self.answers[request.query_params.get("rows", "")], media_type="application/json")


def deploy(answer: bytes, by_rows: dict[int, bytes] | None = None) -> None:
    """Start the floor app in the running Serve instance, at ``ROUTE``: it answers
    ``answer``, or ``by_rows[n]`` to ``ROUTE?rows=n`` (one floor for several sizes)."""
    answers = {"": answer, **{str(n): a for n, a in (by_rows or {}).items()}}
    serve.run(Floor.bind(answers), name=APP_NAME, route_prefix=ROUTE)  # type: ignore[attr-defined]


def ceiling(floor_rows_s: float, core_rows_s: float) -> float:
    """Rows/s of a handler that costs the floor plus the model core, in sequence."""
    return 1.0 / (1.0 / floor_rows_s + 1.0 / core_rows_s)
