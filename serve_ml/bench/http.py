"""``bench http``: single-row and bulk predict through Ray Serve's HTTP entry point
against plain uvicorn + FastAPI (same API, same scoring code, no Ray) and against
the in-process scorer, alternating baseline and candidate in every repeat."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import numpy as np
import orjson

from serve_ml.bench import floor
from serve_ml.bench.common import Figure, Report, time_it
from serve_ml.bench.loadgen import LoadResult, run_load, write_bodies
from serve_ml.bench.servers import API, serve_cluster, uvicorn_baseline
from serve_ml.bundles.batch import Reading, ReadingColumns
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.columns import from_binary, score_columns
from serve_ml.scoring.service import ScoringService

BULK_ROWS = 1000


def column_bodies(root: Path) -> tuple[list[bytes], list[bytes], str, dict[str, np.ndarray]]:
    """1000-row columnar bodies (press-02 at 7.5 kW, rotated) as JSON and as raw float64,
    the binary endpoint's query string, and the same columns as arrays."""
    rows = json.loads((root / "press-02" / "7.5kW" / "1.0.0" / "warmup.json").read_text())["rows"]
    table = [rows[i % len(rows)] for i in range(BULK_ROWS)]
    names = list(table[0])
    bodies, binary = [], []
    for k in range(0, 40, 10):
        rot = table[k:] + table[:k]
        bodies.append(orjson.dumps({"equipment_id": "press-02", "power": "7.5kW",
                                    "columns": {f: [r[f] for r in rot] for f in names}}))
        binary.append(np.array([[r[f] for r in rot] for f in names], dtype="<f8").tobytes())
    query = urlencode({"equipment_id": "press-02", "power": "7.5kW", "features": ",".join(names)})
    return bodies, binary, query, {f: np.array([r[f] for r in table]) for f in names}


def sample_bodies(root: Path) -> tuple[list[bytes], list[bytes], list[dict]]:
    """Single-row bodies (press-02 and pump-03, both power classes) and 1000-row bulk bodies."""
    readings = []
    for eq in ("press-02", "pump-03"):
        for power in ("5.5kW", "7.5kW"):
            rows = json.loads((root / eq / power / "1.0.0" / "warmup.json").read_text())["rows"]
            readings += [{"equipment_id": eq, "power": power, "features": r} for r in rows]
    single = [orjson.dumps(r) for r in readings]
    bulk_rows = [readings[i % len(readings)] for i in range(BULK_ROWS)]
    bulk = [orjson.dumps({"readings": bulk_rows[k:] + bulk_rows[:k]}) for k in range(0, 40, 10)]
    return single, bulk, bulk_rows


def real_answer(root: Path, body: bytes, query: str) -> bytes:
    """The answer the binary endpoint gives for ``body``, as the floor app's fixed answer."""
    q = {k: v[0] for k, v in parse_qs(query).items()}
    columns, n = from_binary(body, q["features"], "float64", BULK_ROWS)
    status, answer = ScoringService(root, enable_xgb=False).score_columns("press-02", "7.5kW", None, columns, n)
    if status != 200:
        raise RuntimeError(f"scoring the floor's answer failed: {answer[:200]!r}")
    return answer[:-1] + b',"latency_ms":0.25}'


def _fig(rep: Report, name: str, unit: str, runs: list[float], target: str = "", met: bool | None = None) -> Figure:
    return rep.add(Figure(name, unit, runs, target or None, met))


def run(root: Path, repeats: int = 3, duration_s: float = 5.0) -> Report:
    """``root``: the bundle root to serve (the settings' ``root``)."""
    single, bulk, bulk_rows = sample_bodies(root)
    single_file, bulk_file = write_bodies(single), write_bodies(bulk)
    col_bodies, bin_bodies, bin_query, col_arrays = column_bodies(root)
    columns_file, binary_file = write_bodies(col_bodies), write_bodies(bin_bodies)
    cat = Catalog.scan(root)
    reads = ReadingColumns.of_readings([Reading(r["equipment_id"], r["features"], r["power"]) for r in bulk_rows])
    service = ScoringService(root, enable_xgb=False)
    res: dict[str, list[LoadResult]] = {}
    inproc: list[float] = []
    inproc_cols: list[float] = []

    def load(key: str, base: str, path: str, body_file: Path, conc: int, ctype: str = "application/json") -> None:
        res.setdefault(key, []).append(run_load(f"{base}{API}{path}", body_file, conc, duration_s, ctype))

    binary_path, octets = f"/predict/columns/binary?{bin_query}", "application/octet-stream"

    with uvicorn_baseline(root) as uv, serve_cluster(root) as sc:
        floor.deploy(real_answer(root, bin_bodies[0], bin_query))
        floor_url = f"{sc.http_url}{floor.ROUTE}"
        for base in (uv, sc.http_url):  # warm-up
            run_load(f"{base}{API}/predict", single_file, 4, 1.0)
            run_load(f"{base}{API}/predict/bulk", bulk_file, 2, 1.0)
            run_load(f"{base}{API}/predict/columns", columns_file, 2, 1.0)
            run_load(f"{base}{API}{binary_path}", binary_file, 2, 1.0, octets)
        run_load(floor_url, binary_file, 2, 1.0, octets)
        for _ in range(repeats):
            for conc in (1, 16):
                load(f"uvicorn-{conc}", uv, "/predict", single_file, conc)
                load(f"serve-{conc}", sc.http_url, "/predict", single_file, conc)
            load("uvicorn-bulk", uv, "/predict/bulk", bulk_file, 2)
            load("serve-bulk", sc.http_url, "/predict/bulk", bulk_file, 2)
            load("uvicorn-columns", uv, "/predict/columns", columns_file, 2)
            load("serve-columns", sc.http_url, "/predict/columns", columns_file, 2)
            load("uvicorn-binary", uv, binary_path, binary_file, 2, octets)
            load("serve-binary", sc.http_url, binary_path, binary_file, 2, octets)
            res.setdefault("floor", []).append(run_load(floor_url, binary_file, 2, duration_s, octets))
            inproc.append(BULK_ROWS / time_it(lambda: service.score_bulk(reads), min_time_s=1.0))
            inproc_cols.append(BULK_ROWS / time_it(lambda: score_columns(
                cat, "press-02", "7.5kW", None, col_arrays, BULK_ROWS, enable_xgb=False), min_time_s=1.0))

    rep = Report(f"bench http: single-row and bulk predict ({repeats} x {duration_s:g}s per cell, "
                 f"load by {res['serve-1'][0].tool})")
    errors = sum(r.errors for rs in res.values() for r in rs)
    for conc in (1, 16):
        for who in ("uvicorn", "serve"):
            rs = res[f"{who}-{conc}"]
            _fig(rep, f"{who} single-row, {conc} client(s)", "req/s", [r.rps for r in rs])
            p50 = _fig(rep, f"{who} single-row, {conc} client(s) p50", "ms", [r.p50_ms for r in rs])
            p99 = _fig(rep, f"{who} single-row, {conc} client(s) p99", "ms", [r.p99_ms for r in rs])
            if who == "serve" and conc == 1:
                p50.target, p50.met = "<= 2 ms", p50.median <= 2.0
            if who == "serve" and conc == 16:
                p99.target, p99.met = "<= 15 ms", p99.median <= 15.0
        ratios = [s.rps / u.rps for s, u in zip(res[f"serve-{conc}"], res[f"uvicorn-{conc}"], strict=True)]
        f = _fig(rep, f"serve / uvicorn req/s, {conc} client(s)", "ratio", ratios)
        if conc == 16:
            f.target, f.met = ">= 0.5", f.median >= 0.5
    for who in ("uvicorn", "serve"):
        _fig(rep, f"{who} bulk {BULK_ROWS}-row, 2 clients", "rows/s", [r.rps * BULK_ROWS for r in res[f"{who}-bulk"]])
    _fig(rep, f"in-process score_bulk (rows in, JSON out), batch {BULK_ROWS}", "rows/s", inproc)
    ratios = [r.rps * BULK_ROWS / ip for r, ip in zip(res["serve-bulk"], inproc, strict=True)]
    _fig(rep, "serve bulk (rows) / in-process score_bulk", "ratio", ratios)
    for who in ("uvicorn", "serve"):
        _fig(rep, f"{who} columnar JSON {BULK_ROWS}-row, 2 clients", "rows/s",
             [r.rps * BULK_ROWS for r in res[f"{who}-columns"]])
        _fig(rep, f"{who} columnar binary {BULK_ROWS}-row, 2 clients", "rows/s",
             [r.rps * BULK_ROWS for r in res[f"{who}-binary"]])
    _fig(rep, f"in-process score_columns (model core), batch {BULK_ROWS}", "rows/s", inproc_cols)
    ratios = [r.rps * BULK_ROWS / ip for r, ip in zip(res["serve-columns"], inproc_cols, strict=True)]
    _fig(rep, "serve columnar JSON / in-process score_columns", "ratio", ratios)
    # The target is judged on the fastest bulk form the API offers, against the same
    # columns scored in process: the floor for this model on this machine.
    ratios = [r.rps * BULK_ROWS / ip for r, ip in zip(res["serve-binary"], inproc_cols, strict=True)]
    f = _fig(rep, "serve columnar binary / in-process score_columns", "ratio", ratios, ">= 0.5")
    f.met = f.median >= 0.5
    # What bounds that ratio on this machine: Serve's own per-request cost, measured.
    floors = [r.rps * BULK_ROWS for r in res["floor"]]
    _fig(rep, f"serve floor: bare deployment, fixed {BULK_ROWS}-row answer, 2 clients", "rows/s", floors)
    _fig(rep, "serve floor / in-process score_columns", "ratio",
         [fl / ip for fl, ip in zip(floors, inproc_cols, strict=True)])
    _fig(rep, "ceiling: floor + model core in one replica / in-process", "ratio",
         [floor.ceiling(fl, ip) / ip for fl, ip in zip(floors, inproc_cols, strict=True)])
    _fig(rep, "client-visible errors (all cells)", "count", [float(errors)], "0", errors == 0)
    return rep
