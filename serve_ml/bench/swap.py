"""``bench swap``: a steady request loop (wrk, its own process) while the live version
of one equipment is swapped N times; failed requests, time from the swap call to the
new version answering on both paths, and p99 with vs without swaps (same run)."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson

from serve_ml.bench.common import Figure, Report
from serve_ml.bench.loadgen import LoadResult, run_load, write_bodies
from serve_ml.bench.servers import API, serve_cluster

EQ, POWER = "press-02", "7.5kW"


def _serving(base: str, version: str, reading: dict) -> bool:
    single = httpx.post(f"{base}{API}/predict", json=reading, timeout=10).json()
    bulk = httpx.post(f"{base}{API}/predict/bulk", json={"readings": [reading]}, timeout=10).json()["results"][0]
    return single.get("model_version") == version and bulk.get("model_version") == version


def run(source: Path, swaps: int = 6, duration_s: float = 12.0) -> Report:
    from serve_ml.bundles.builder import BuildSpec, build_bundle
    from serve_ml.bundles.demo import TORQUE_SPEED
    from serve_ml.bundles.simulation import MECHANICAL, THERMAL, MachineSpec, simulate_dataset

    token = "bench-swap-token"
    os.environ["SERVE_ML_ADMIN_TOKEN"] = token  # the replicas inherit it from this process
    auth = {"Authorization": f"Bearer {token}"}
    rep = Report(f"bench swap: {swaps} live-version swaps of {EQ}/{POWER} under steady load (wrk, 8 clients)")
    with tempfile.TemporaryDirectory(prefix="serve-ml-swap-") as tmp:
        root = Path(tmp) / "root"
        shutil.copytree(source, root)
        cols, labels = simulate_dataset(2000, 100, spec=MachineSpec.for_power(POWER), seed=3)
        spec = BuildSpec(equipment_id=EQ, power=POWER, model_version="2.0.0", power_range_kw=(5.5, 100.0),
                         power_source=TORQUE_SPEED, modalities={"thermal": list(THERMAL),
                                                                "mechanical": list(MECHANICAL)}, epochs=20)
        build_bundle(spec, cols, labels, root, data="simulator:bench", progress=lambda _m: None)
        row = {k: float(v[0]) for k, v in cols.items()}
        reading = {"equipment_id": EQ, "power": POWER, "features": row}
        bodies = write_bodies([orjson.dumps(reading)])
        with serve_cluster(root) as sc:
            base = sc.http_url
            url = f"{base}{API}/predict"
            run_load(url, bodies, 8, 2)
            quiet = run_load(url, bodies, 8, duration_s)
            busy: list[LoadResult] = []
            t = threading.Thread(target=lambda: busy.append(run_load(url, bodies, 8, duration_s)))
            t.start()
            to_serving = []
            for i in range(swaps):
                version = "1.0.0" if i % 2 else "2.0.0"
                t0 = time.perf_counter()
                r = httpx.post(f"{base}{API}/bundles/{EQ}/{POWER}/activate", headers=auth, timeout=60,
                               json={"model_version": version, "reason": "bench"})
                r.raise_for_status()
                while not _serving(base, version, reading):
                    time.sleep(0.02)
                to_serving.append(time.perf_counter() - t0)
                time.sleep(max(0.0, duration_s / swaps - to_serving[-1]) * 0.8)
            t.join()
    loaded = busy[0]
    rep.add(Figure("requests during swaps", "count", [float(loaded.requests)]))
    rep.add(Figure("failed requests during swaps", "count", [float(loaded.errors)], "0", loaded.errors == 0))
    rep.add(Figure("swap call -> new version serving (both paths)", "s", to_serving, "< 5",
                   sorted(to_serving)[len(to_serving) // 2] < 5))
    rep.add(Figure("p99 without swaps", "ms", [quiet.p99_ms]))
    rep.add(Figure("p99 during swaps", "ms", [loaded.p99_ms]))
    rep.add(Figure("p99 during / without swaps", "ratio", [loaded.p99_ms / quiet.p99_ms]))
    return rep
