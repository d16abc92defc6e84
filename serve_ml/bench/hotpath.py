"""The hot-path audit: what a warm request does besides the maths.

The rule for the inference path is that nothing on it does per-row Python work,
re-validates a bundle or re-reads files. Timings cannot show that; tracing can. The
audit drives the HTTP API in process (the same FastAPI app and scoring code the Serve
ingress runs, metrics counted as the ingress counts them) and traces each route at
two request sizes, warm (a first call, untraced, fills the caches):

- file-system calls: ``open``/``os.*`` audit events, and calls of ``os.stat`` & co
  (those raise no audit event);
- bundle loading: any Python frame in the modules that load and validate bundles;
- per-row Python work: Python lines executed per extra row, from the difference
  between the two sizes. Work that grows with the request, not with its rows (one
  loop per column, per modality), cancels out.

``bench score`` prints these figures; ``tests/unit/test_bench_hotpath.py`` holds
them to their targets.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Self
from urllib.parse import urlencode

import httpx
import numpy as np
import orjson

from serve_ml.bench import peers
from serve_ml.bench.common import Figure, Report
from serve_ml.bundles.catalog import Catalog
from serve_ml.deployments.api import PREFIX, create_api
from serve_ml.deployments.local import LocalCore
from serve_ml.scoring.metrics import Metrics
from serve_ml.scoring.service import ScoringService

# Modules whose code runs only to load or validate a bundle.
LOADING_MODULES = tuple(str(Path("bundles") / m) for m in
                        ("loader.py", "manifest.py", "warmup.py", "archive.py", "builder.py"))
FS_FUNCTIONS = frozenset({"stat", "lstat", "fstat", "access", "listdir", "scandir", "readlink", "open"})
FS_EVENT_PREFIXES = ("open", "os.", "shutil.", "glob.", "pathlib.")


@dataclass
class Trace:
    """What one traced stretch of code did."""

    lines: int = 0
    fs_calls: Counter[str] = field(default_factory=Counter)
    loading_frames: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class RouteAudit:
    route: str
    small_rows: int
    large_rows: int
    small: Trace
    large: Trace

    @property
    def lines_per_extra_row(self) -> float:
        return (self.large.lines - self.small.lines) / (self.large_rows - self.small_rows)

    @property
    def fs_calls(self) -> int:
        return sum(self.small.fs_calls.values()) + sum(self.large.fs_calls.values())

    @property
    def loading_frames(self) -> int:
        return sum(self.small.loading_frames.values()) + sum(self.large.loading_frames.values())


class _Tracer:
    """Line counts, file-system calls and bundle-loading frames, in every thread
    (large requests are scored on a worker thread), while ``active`` is set."""

    _hooked: _Tracer | None = None

    def __init__(self) -> None:
        self._trace: Trace | None = None
        self._gc_was_enabled = False
        if _Tracer._hooked is None:  # audit hooks cannot be removed: one per process
            sys.addaudithook(_Tracer._audit)
        _Tracer._hooked = self

    @property
    def trace(self) -> Trace | None:
        return self._trace

    @trace.setter
    def trace(self, trace: Trace | None) -> None:
        # The collector stays off while tracing: finalizers of garbage left by earlier
        # work would run inside the traced request and count as its lines.
        if trace is not None and self._trace is None:
            gc.collect()
            self._gc_was_enabled = gc.isenabled()
            gc.disable()
        elif trace is None and self._trace is not None and self._gc_was_enabled:
            gc.enable()
        self._trace = trace

    @staticmethod
    def _audit(event: str, args: tuple[Any, ...]) -> None:
        t = _Tracer._hooked._trace if _Tracer._hooked else None
        if t is not None and event.startswith(FS_EVENT_PREFIXES):
            t.fs_calls[f"{event} {args[0] if args else ''}"] += 1

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        t = self._trace
        if t is None:
            return
        if event == "c_call" and getattr(arg, "__module__", None) in ("posix", "nt", "io") \
                and arg.__name__ in FS_FUNCTIONS:
            t.fs_calls[f"{arg.__module__}.{arg.__name__}"] += 1
        elif event == "call" and frame.f_code.co_filename.endswith(LOADING_MODULES):
            t.loading_frames[f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}"] += 1

    def _line(self, frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        t = self._trace
        if t is None:
            return None
        if event == "line":
            t.lines += 1
        return self._line

    def __enter__(self) -> Self:
        self._saved = sys.gettrace(), sys.getprofile()
        threading.settrace(self._line)
        threading.setprofile(self._profile)
        sys.settrace(self._line)
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(self._saved[0])
        sys.setprofile(self._saved[1])
        threading.settrace(self._saved[0])
        threading.setprofile(self._saved[1])


class _TallyMetrics(Metrics):
    """The ingress's metrics with Ray's recorder left out: the per-request counting
    (``scored_columns``, ``scored_groups``) runs as in the ingress; only the hand-off to
    Ray's metrics agent, which needs a Ray worker, does nothing."""

    def __init__(self) -> None:  # no Ray metric objects outside Ray
        pass

    def request(self, endpoint: str, status: int, latency_ms: float) -> None:
        pass

    def replica_fallback(self, equipment: str) -> None:
        pass

    def record(self, outcome: Any, modal: Any, clf: Any, elapsed_ms: float, classifier_s: Any = None) -> None:
        pass

    def catalog(self, bundles: Iterable[Any], live: dict[tuple[str, str], str], old_live: dict) -> None:
        pass


def trace_call(fn: Callable[[], object]) -> Trace:
    """What ``fn()`` does, traced as the audit traces a request (the detectors' own test)."""
    tracer = _Tracer()
    with tracer:
        tracer.trace = trace = Trace()
        try:
            fn()
        finally:
            tracer.trace = None
    return trace


Call = tuple[str, bytes, dict[str, str]]
"""A request of the audit: path, body, headers."""


@dataclass(frozen=True)
class _Route:
    name: str
    build: Callable[[int], Call]


def _routes(rows: Sequence[dict[str, float]], equipment_id: str, power: str) -> list[_Route]:
    """Row bulk and columnar JSON leave the power class out (chosen per row from the
    features, on the hot path too); binary, the benchmark's form, names it."""
    names = list(rows[0])
    json_type, binary_type = "application/json", "application/octet-stream"

    def table(n: int) -> list[dict[str, float]]:
        return [rows[i % len(rows)] for i in range(n)]

    def bulk(n: int) -> Call:
        body = {"readings": [{"equipment_id": equipment_id, "features": r} for r in table(n)]}
        return f"{PREFIX}/predict/bulk", orjson.dumps(body), {"content-type": json_type}

    def columns(n: int) -> Call:
        t = table(n)
        body = {"equipment_id": equipment_id, "columns": {f: [r[f] for r in t] for f in names}}
        return f"{PREFIX}/predict/columns", orjson.dumps(body), {"content-type": json_type}

    def binary(n: int) -> Call:
        t = table(n)
        query = urlencode({"equipment_id": equipment_id, "power": power, "features": ",".join(names)})
        body = np.array([[r[f] for r in t] for f in names], dtype="<f8").tobytes()
        return f"{PREFIX}/predict/columns/binary?{query}", body, {"content-type": binary_type}

    def v2_binary(n: int) -> Call:
        body, head_length = peers.v2_binary(table(n), names, power)
        return f"/v2/models/{equipment_id}/infer", body, {"content-type": binary_type,
                                                          "inference-header-content-length": str(head_length)}

    return [_Route("row bulk", bulk), _Route("columnar JSON", columns), _Route("columnar binary", binary),
            _Route("V2 binary", v2_binary)]


def _single(rows: Sequence[dict[str, float]], equipment_id: str) -> Call:
    """Power left out on purpose: it is chosen from the features, on the hot path."""
    return (f"{PREFIX}/predict", orjson.dumps({"equipment_id": equipment_id, "features": rows[0]}),
            {"content-type": "application/json"})


async def _call(client: httpx.AsyncClient, request: Call) -> None:
    path, body, headers = request
    r = await client.post(path, content=body, headers=headers)
    if r.status_code != 200:
        raise RuntimeError(f"hot-path audit: {path} answered {r.status_code}: {r.text[:300]}")


def audit(root: Path, *, equipment_id: str = "press-02", power: str = "7.5kW", small_rows: int = 100,
          large_rows: int = 2100, enable_xgb: bool = True) -> tuple[Trace, list[RouteAudit]]:
    """Trace a warm single-row predict, then every bulk route at two sizes. Returns the
    single-row trace and one audit per bulk route."""
    service = ScoringService(root, enable_xgb=enable_xgb, metrics=_TallyMetrics())
    core = LocalCore(service, max_bulk_rows=max(large_rows, 10_000))
    app = create_api(core, max_request_bytes=64 * 2**20)
    warmup = Catalog.scan(root, equipment_ids={equipment_id}).live_bundle(equipment_id, power).warmup
    rows = warmup.point_rows() if warmup else []
    if not rows:
        raise SystemExit(f"{equipment_id}/{power} has no warm-up rows to audit with")
    routes = _routes(rows, equipment_id, power)
    tracer = _Tracer()

    armed: list[Trace] = []

    async def server(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        # Traced from the server's side only: the in-process client's own work
        # (httpx probes for trio with an import per request) is not the server's.
        tracer.trace = armed.pop() if armed else None
        try:
            await app(scope, receive, send)
        finally:
            tracer.trace = None

    async def traced(client: httpx.AsyncClient, request: Call) -> Trace:
        """Three warm calls: the fewest lines (waiting on a worker thread adds a few at
        random), and every file-system call or loading frame any of them made."""
        await _call(client, request)  # warm: first-call caches are not the hot path
        runs = []
        for _ in range(3):
            armed.append(trace := Trace())
            await _call(client, request)
            runs.append(trace)
        return Trace(min(t.lines for t in runs), sum((t.fs_calls for t in runs), Counter()),
                     sum((t.loading_frames for t in runs), Counter()))

    async def run() -> tuple[Trace, list[RouteAudit]]:
        # One worker thread, started by the first warm-up: a pool that grows would
        # start threads inside traced requests, at random.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1, thread_name_prefix="hot-path-audit"))
        transport = httpx.ASGITransport(app=server)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://audit") as client:
            single = await traced(client, _single(rows, equipment_id))
            audits = []
            for r in routes:
                small = await traced(client, r.build(small_rows))
                large = await traced(client, r.build(large_rows))
                audits.append(RouteAudit(r.name, small_rows, large_rows, small, large))
            return single, audits

    with tracer:
        return asyncio.run(run())


# A loop over the rows costs at least one line per row; under 0.01 (20 lines over
# 2,000 rows) the difference is the event loop's scheduling, not per-row work.
PER_ROW_NOISE = 0.01


def add_figures(rep: Report, root: Path) -> None:
    """The audit as figures with targets, for ``bench score``."""
    single, routes = audit(root)
    fs = sum(single.fs_calls.values()) + sum(r.fs_calls for r in routes)
    loads = sum(single.loading_frames.values()) + sum(r.loading_frames for r in routes)
    what = f"warm single-row predict and {len(routes)} bulk routes at {routes[0].small_rows} and {routes[0].large_rows} rows"
    rep.add(Figure("hot path: file-system calls", "count", [float(fs)], "0", fs == 0, note=what))
    rep.add(Figure("hot path: bundle loading/validation frames", "count", [float(loads)], "0", loads == 0))
    for r in routes:
        per_row = r.lines_per_extra_row
        rep.add(Figure(f"hot path: Python lines per extra row, {r.route}", "lines", [per_row], "0",
                       abs(per_row) < PER_ROW_NOISE))
