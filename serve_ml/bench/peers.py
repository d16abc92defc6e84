"""``bench peers``: the same bundle served by serve-ml and by MLServer, LitServe,
BentoML and plain FastAPI, on this machine, with the same load generator (wrk).

Every server scores one bundle (press-02 at 7.5 kW: a dense autoencoder gate per
modality and an XGBoost fault classifier) with serve-ml's own model core, so the
figures compare the serving, not the maths; each peer takes its fastest documented
form for bulk (``peer_apps``' docstrings say which). Before any load, one answer per
server and cell is checked against the scores computed in this process.

Cells: a single row at 1 and 16 clients (req/s, p50, p99); bulk at 1,000 and 10,000
rows, 2 clients (rows/s). Every repeat runs every server once per cell, in an order
that rotates between repeats, and each ratio pairs figures of the same repeat. Then
serve-ml's binary columnar bulk against the model core in this process over 100 to
100,000 rows, with Serve's own floor (a bare deployment answering a fixed answer of
the same size) at each.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np
import orjson

from serve_ml.bench import floor
from serve_ml.bench.common import Figure, Report, time_it
from serve_ml.bench.loadgen import LoadResult, run_load, write_bodies, wrk_path
from serve_ml.bench.peer_servers import PEER_VERSIONS, PeerEnv, build_envs, copy_model_core, run_peers
from serve_ml.bench.servers import API, serve_cluster
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.columns import CLASSIFIER_S, dumps, score_columns
from serve_ml.core.settings import default_state_dir
from serve_ml.deployments.app import AppArgs
from serve_ml.deployments.launch import app_args_from_config

EQUIPMENT, POWER = "press-02", "7.5kW"
PEERS = ("fastapi", "litserve", "bentoml", "mlserver")
SERVE = "serve-ml"
SERVE_V2 = "serve-ml (V2 binary)"
BULK_SIZES = (1_000, 10_000)
CURVE_SIZES = (100, 1_000, 10_000, 100_000)
JSON, OCTETS = "application/json", "application/octet-stream"


class NoWrk(SystemExit):
    pass


@dataclass
class Target:
    """One server loaded in one cell: where, with which bodies."""

    server: str
    url: str
    bodies: list[bytes]
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None

    def body_file(self) -> Path:
        if self.file is None:
            self.file = write_bodies(self.bodies)
        return self.file


def require_wrk() -> str:
    """The figures are only comparable from one generator: no wrk, no bench."""
    wrk = wrk_path()
    if wrk is None:
        raise NoWrk("bench peers needs wrk (the same C load generator for every server): `make install` "
                    "installs it, or `apt-get install wrk`; SERVE_ML_LOADGEN=python is refused here")
    return wrk


def rows_of(root: Path, n: int) -> list[dict[str, float]]:
    """``n`` rows cycled from the bundle's recorded warm-up rows."""
    bundle = Catalog.scan(root).live_bundle(EQUIPMENT, POWER)
    rows = bundle.warmup.point_rows() if bundle.warmup else []
    if not rows:
        raise SystemExit(f"{EQUIPMENT}/{POWER} has no warm-up rows to benchmark with")
    return [rows[i % len(rows)] for i in range(n)]


def _rotations(rows: list[dict[str, float]], k: int = 4) -> list[list[dict[str, float]]]:
    step = max(1, len(rows) // (k * 7))
    return [rows[i * step:] + rows[:i * step] for i in range(k)]


def binary_columns(rows: list[dict[str, float]], features: list[str]) -> bytes:
    """serve-ml's binary columnar body: each feature's values back to back, float64."""
    return np.array([[r[f] for r in rows] for f in features], dtype="<f8").tobytes()


def v2_binary(rows: Sequence[Mapping[str, float]], features: list[str], power: str = POWER) -> tuple[bytes, int]:
    """An OIP v2 request with one ``[n, features]`` FP64 tensor in the binary extension,
    outputs asked for in binary too; and its JSON header's length."""
    data = np.array([[r[f] for f in features] for r in rows], dtype="<f8").tobytes()
    head = orjson.dumps({
        "inputs": [{"name": "readings", "shape": [len(rows), len(features)], "datatype": "FP64",
                    "parameters": {"features": ",".join(features), "binary_data_size": len(data)}}],
        "parameters": {"power": power, "binary_data_output": True}})
    return head + data, len(head)


def v2_json(rows: list[dict[str, float]], features: list[str]) -> bytes:
    return orjson.dumps({
        "inputs": [{"name": "readings", "shape": [len(rows), len(features)], "datatype": "FP64",
                    "parameters": {"features": ",".join(features)},
                    "data": np.array([[r[f] for f in features] for r in rows]).reshape(-1)}]},
        option=orjson.OPT_SERIALIZE_NUMPY)


def json_columns(rows: list[dict[str, float]], features: list[str]) -> bytes:
    return orjson.dumps({"columns": {f: [r[f] for r in rows] for f in features}})


def single_targets(base: Mapping[str, str], rows: list[dict[str, float]], features: list[str]) -> list[Target]:
    """Each server's single-row route, with the same rows."""
    out = [Target(SERVE, f"{base[SERVE]}{API}/predict",
                  [orjson.dumps({"equipment_id": EQUIPMENT, "power": POWER, "features": r}) for r in rows])]
    plain = [orjson.dumps({"features": r}) for r in rows]
    for name in PEERS:
        if name not in base:
            continue
        if name == "mlserver":
            out.append(Target(name, f"{base[name]}/v2/models/{EQUIPMENT}/infer", [v2_json([r], features) for r in rows]))
        else:
            path = "/predict"
            out.append(Target(name, base[name] + path, plain))
    return out


def bulk_targets(base: Mapping[str, str], rows: list[dict[str, float]], features: list[str]) -> list[Target]:
    """Each server's fastest bulk form, with the same rows (in four rotations)."""
    rots = _rotations(rows)
    query = urlencode({"equipment_id": EQUIPMENT, "power": POWER, "features": ",".join(features)})
    binary = [binary_columns(r, features) for r in rots]
    v2 = [v2_binary(r, features) for r in rots]
    out = [Target(SERVE, f"{base[SERVE]}{API}/predict/columns/binary?{query}", binary, OCTETS),
           Target(SERVE_V2, f"{base[SERVE]}/v2/models/{EQUIPMENT}/infer", [b for b, _ in v2], OCTETS,
                  {"Inference-Header-Content-Length": str(v2[0][1])})]
    for name in PEERS:
        if name not in base:
            continue
        if name == "fastapi":
            out.append(Target(name, f"{base[name]}/predict/columns/binary?{urlencode({'features': ','.join(features)})}",
                              binary, OCTETS))
        elif name == "mlserver":
            out.append(Target(name, f"{base[name]}/v2/models/{EQUIPMENT}/infer", [v2_json(r, features) for r in rots]))
        else:
            path = "/predict_columns" if name == "bentoml" else "/predict"
            out.append(Target(name, base[name] + path, [json_columns(r, features) for r in rots]))
    return out


def answer_scores(body: bytes, header_length: str | None) -> np.ndarray:
    """The ``score`` column of any server's answer: serve-ml's JSON (one row or
    columnar) or an OIP v2 response, JSON or binary."""
    head = body if header_length is None else body[:int(header_length)]
    doc = orjson.loads(head)
    if "outputs" not in doc:
        return np.atleast_1d(np.asarray(doc["score"], dtype=np.float64))
    offset, tail = 0, body[len(head):]
    for out in doc["outputs"]:
        size = (out.get("parameters") or {}).get("binary_data_size")
        if out["name"] == "score":
            if size is None:
                return np.asarray(out["data"], dtype=np.float64)
            return np.frombuffer(tail, dtype="<f8", count=size // 8, offset=offset)
        offset += size or 0
    raise ValueError("the answer has no 'score' output")


def expected_scores(catalog: Catalog, rows: list[dict[str, float]], features: list[str]) -> np.ndarray:
    cols = {f: np.array([r[f] for r in rows], dtype=np.float64) for f in features}
    return np.asarray(score_columns(catalog, EQUIPMENT, POWER, None, cols, len(rows), enable_xgb=True)["score"],
                      dtype=np.float64)


def verify(target: Target, expected: np.ndarray) -> None:
    """One request; its scores must be the model core's, or the cell measures something else."""
    r = httpx.post(target.url, content=target.bodies[0], timeout=60,
                   headers={"content-type": target.content_type, **target.headers})
    if r.status_code != 200:
        raise RuntimeError(f"{target.server} answered {r.status_code} at {target.url}: {r.text[:500]}")
    got = answer_scores(r.content, r.headers.get("inference-header-content-length"))
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-9, atol=1e-12):
        raise RuntimeError(f"{target.server}: scores differ from the model core's at {target.url}: "
                           f"{got[:5]} vs {expected[:5]}")


def floor_answer(catalog: Catalog, rows: list[dict[str, float]], features: list[str]) -> bytes:
    """The answer serve-ml's binary route gives for ``rows``: the floor app answers it."""
    cols = {f: np.array([r[f] for r in rows], dtype=np.float64) for f in features}
    out = score_columns(catalog, EQUIPMENT, POWER, None, cols, len(rows), enable_xgb=True)
    out.pop(CLASSIFIER_S, None)
    return dumps({**out, "latency_ms": 0.25})


@dataclass
class Results:
    runs: dict[tuple[str, str], list[LoadResult]] = field(default_factory=dict)

    def add(self, cell: str, server: str, r: LoadResult) -> None:
        self.runs.setdefault((cell, server), []).append(r)

    def get(self, cell: str, server: str) -> list[LoadResult]:
        return self.runs.get((cell, server), [])

    def errors(self) -> int:
        return sum(r.errors for rs in self.runs.values() for r in rs)


def _load(res: Results, cell: str, t: Target, conc: int, duration_s: float) -> None:
    res.add(cell, t.server, run_load(t.url, t.body_file(), conc, duration_s, t.content_type, t.headers))


def serve_args(root: Path, workers: int) -> AppArgs:
    """serve-ml as configured in ``serve_config.yaml``, with the classifier on and
    ``workers`` replicas of the ingress and of the equipment deployment, fixed."""
    fixed = {"min_replicas": workers, "max_replicas": workers}
    return app_args_from_config(root=str(root), enable_xgb=True, ingress_autoscaling=fixed,
                                equipment={EQUIPMENT: fixed})


def run(root: Path, *, repeats: int = 3, duration_s: float = 5.0, peers: tuple[str, ...] = PEERS,
        workers: int = 1, state_dir: Path | None = None) -> Report:
    """``root``: a bundle root holding ``press-02/7.5kW`` (the demo bundles do).
    ``workers``: worker processes of every server (serve-ml: replicas)."""
    require_wrk()
    state = state_dir or default_state_dir()
    print("bench peers: peer virtualenvs", flush=True)
    envs = build_envs(state, peers)
    core = copy_model_core(state)
    work = Path(tempfile.mkdtemp(prefix="serve-ml-peers-"))
    try:
        bundle_root = work / "bundles"
        src = Catalog.scan(root).live_bundle(EQUIPMENT, POWER).path
        shutil.copytree(src, bundle_root / EQUIPMENT / POWER / src.name)
        return _run(bundle_root, work, envs, core, repeats, duration_s, workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(root: Path, work: Path, envs: list[PeerEnv], core: Path, repeats: int, duration_s: float,
         workers: int) -> Report:
    catalog = Catalog.scan(root)
    sample = rows_of(root, max(CURVE_SIZES))
    features = list(sample[0])
    single_rows = rows_of(root, 64)
    res = Results()
    inproc: dict[int, list[float]] = {}
    with run_peers(envs, core, root, work, equipment_id=EQUIPMENT, power=POWER, workers=workers) as running, \
            serve_cluster(root, serve_args(root, workers), max_bulk_rows=max(CURVE_SIZES)) as sc:
        base = {SERVE: sc.http_url, **{n: p.base for n, p in running.items()}}
        singles = single_targets(base, single_rows, features)
        bulks = {n: bulk_targets(base, sample[:n], features) for n in BULK_SIZES}
        curve = {n: Target(SERVE, bulk_targets({SERVE: sc.http_url}, sample[:n], features)[0].url,
                           [binary_columns(r, features) for r in _rotations(sample[:n])], OCTETS)
                 for n in CURVE_SIZES if n not in BULK_SIZES}
        floor.deploy(b"{}", {n: floor_answer(catalog, sample[:n], features) for n in CURVE_SIZES})
        floors = {n: Target("floor", f"{sc.http_url}{floor.ROUTE}?rows={n}", curve[n].bodies if n in curve else
                            next(t for t in bulks[n] if t.server == SERVE).bodies, OCTETS) for n in CURVE_SIZES}
        print("bench peers: checking every server's answers against the model core", flush=True)
        verify_all(catalog, singles, bulks, curve, single_rows, sample, features)
        for t in singles:  # warm-up
            run_load(t.url, t.body_file(), 4, 1.0, t.content_type, t.headers)
        for ts in bulks.values():
            for t in ts:
                run_load(t.url, t.body_file(), 2, 1.0, t.content_type, t.headers)
        for k in range(repeats):
            print(f"bench peers: repeat {k + 1} of {repeats}", flush=True)
            for conc in (1, 16):
                for t in _rotate(singles, k):
                    _load(res, f"single-{conc}", t, conc, duration_s)
            for n in BULK_SIZES:
                for t in _rotate(bulks[n], k):
                    _load(res, f"bulk-{n}", t, 2, duration_s)
            for n in CURVE_SIZES:
                if n in curve:
                    _load(res, f"bulk-{n}", curve[n], 2, duration_s)
                _load(res, f"floor-{n}", floors[n], 2, duration_s)
                cols = {f: np.array([r[f] for r in sample[:n]], dtype=np.float64) for f in features}
                inproc.setdefault(n, []).append(n / time_it(lambda c=cols, m=n: score_columns(  # type: ignore[misc]
                    catalog, EQUIPMENT, POWER, None, c, m, enable_xgb=True), min_time_s=1.0))
    return report(res, inproc, repeats, duration_s, [t.server for t in singles], workers)


def verify_all(catalog: Catalog, singles: list[Target], bulks: Mapping[int, list[Target]],
               curve: Mapping[int, Target], single_rows: list[dict[str, float]],
               sample: list[dict[str, float]], features: list[str]) -> None:
    one = expected_scores(catalog, single_rows[:1], features)
    for t in singles:
        verify(t, one)
    for n, ts in bulks.items():
        expected = expected_scores(catalog, _rotations(sample[:n])[0], features)
        for t in ts:
            verify(t, expected)
    for n, t in curve.items():
        verify(t, expected_scores(catalog, _rotations(sample[:n])[0], features))


def _rotate(targets: list[Target], k: int) -> list[Target]:
    k %= len(targets)
    return targets[k:] + targets[:k]


def _paired(res: Results, cell: str, who: str, others: list[str], value: Callable[[LoadResult], float]) -> list[float]:
    """Per repeat: ``who`` over the best of ``others`` in the same repeat."""
    mine = [value(r) for r in res.get(cell, who)]
    theirs = [max(value(r[k]) for r in [res.get(cell, o) for o in others]) for k in range(len(mine))]
    return [m / t for m, t in zip(mine, theirs, strict=True)]


def report(res: Results, inproc: Mapping[int, list[float]], repeats: int, duration_s: float,
           servers: list[str], workers: int) -> Report:
    peers = [s for s in servers if s != SERVE]
    versions = ", ".join(f"{p} ({' '.join(PEER_VERSIONS[p])})" for p in peers)
    rep = Report(f"bench peers: the same bundle ({EQUIPMENT}/{POWER}, gate + XGBoost) on serve-ml and {versions}; "
                 f"{workers} worker process(es) each (serve-ml: replicas); {repeats} x {duration_s:g}s per cell, "
                 f"load by wrk")
    for conc in (1, 16):
        cell = f"single-{conc}"
        for s in servers:
            rs = res.get(cell, s)
            rep.add(Figure(f"{s} single-row, {conc} client(s)", "req/s", [r.rps for r in rs]))
            rep.add(Figure(f"{s} single-row, {conc} client(s) p50", "ms", [r.p50_ms for r in rs]))
            p99 = rep.add(Figure(f"{s} single-row, {conc} client(s) p99", "ms", [r.p99_ms for r in rs]))
            if s == SERVE and conc == 16:
                p99.target, p99.met = "<= 15 ms", p99.median <= 15.0
        ratio = rep.add(Figure(f"serve-ml / best peer req/s, {conc} client(s)", "ratio",
                               _paired(res, cell, SERVE, peers, lambda r: r.rps)))
        if conc == 16:
            ratio.target, ratio.met = ">= 0.8", ratio.median >= 0.8
    for n in BULK_SIZES:
        cell = f"bulk-{n}"
        for s in [SERVE, SERVE_V2, *peers]:
            rep.add(Figure(f"{s} bulk {n:,} rows, 2 clients", "rows/s", [r.rps * n for r in res.get(cell, s)]))
        for who in (SERVE, SERVE_V2):
            rep.add(Figure(f"{who} / best peer rows/s, bulk {n:,}", "ratio",
                           _paired(res, cell, who, peers, lambda r: r.rps)))
        best = [max(a, b) for a, b in zip(_paired(res, cell, SERVE, peers, lambda r: r.rps),
                                           _paired(res, cell, SERVE_V2, peers, lambda r: r.rps), strict=True)]
        rep.add(Figure(f"serve-ml's faster form / best peer, bulk {n:,}", "ratio", best, ">= 1.0",
                       statistics.median(best) >= 1.0))
    for n in CURVE_SIZES:
        serve = [r.rps * n for r in res.get(f"bulk-{n}", SERVE)]
        fl = [r.rps * n for r in res.get(f"floor-{n}", "floor")]
        core = list(inproc[n])
        rep.add(Figure(f"curve {n:,} rows: serve-ml binary columnar, 2 clients", "rows/s", serve))
        rep.add(Figure(f"curve {n:,} rows: model core in process", "rows/s", core))
        rep.add(Figure(f"curve {n:,} rows: Serve floor (fixed answer), 2 clients", "rows/s", fl))
        rep.add(Figure(f"curve {n:,} rows: serve-ml / model core", "ratio",
                       [s / c for s, c in zip(serve, core, strict=True)]))
        rep.add(Figure(f"curve {n:,} rows: ceiling (floor + core in sequence) / model core", "ratio",
                       [floor.ceiling(f, c) / c for f, c in zip(fl, core, strict=True)]))
    errors = res.errors()
    rep.add(Figure("client-visible errors (all cells)", "count", [float(errors)], "0", errors == 0))
    return rep

