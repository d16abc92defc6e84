"""``bench sequence``: a sequence bundle (an LSTM gate over 30 readings), built for the
run into a temporary root. In process: windows/s through ``score_group`` at batch 1,
64 and 4,096 against the same torch module called directly on the same scaled
windows (the model's own cost), alternating. Through Ray Serve: windows sent as
columns (rows x steps) to ``/predict/columns``, against ``score_columns`` in process
on the same bodies."""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import orjson
import torch

from serve_ml.bench.common import Figure, Report, time_it
from serve_ml.bench.loadgen import run_load, write_bodies
from serve_ml.bench.servers import API, serve_cluster
from serve_ml.bundles.builder import BuildSpec, build_bundle
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.columns import score_columns
from serve_ml.bundles.scoring import score_group
from serve_ml.bundles.simulation import MachineSpec, simulate

STEPS = 30
BINARY_MEDIA_TYPE = "application/octet-stream"
FEATURES = ("air_temp_k", "process_temp_k", "vibration_rms_mm_s", "current_a")
BATCHES = (1, 64, 4096)
HTTP_WINDOWS = 256


def build(root: Path) -> None:
    cols = simulate(3000, spec=MachineSpec.for_power("7.5kW"), rng=np.random.default_rng(0))
    spec = BuildSpec(equipment_id="seq-01", power="7.5kW", model_version="1.0.0", power_range_kw=(0.0, 100.0),
                     modalities={"machine": list(FEATURES)}, kind="lstm_autoencoder", window_steps=STEPS,
                     classifier=False, epochs=3)
    build_bundle(spec, cols, np.full(3000, "none"), root, data="simulator:bench", progress=lambda _m: None)


def windows(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    cols = simulate(n + STEPS, spec=MachineSpec.for_power("7.5kW"), rng=np.random.default_rng(seed))
    return {f: np.lib.stride_tricks.sliding_window_view(cols[f], STEPS)[:n].copy() for f in FEATURES}


def run(*, repeats: int = 3, duration_s: float = 5.0) -> Report:
    rep = Report(f"bench sequence: lstm_autoencoder over {STEPS} readings, {len(FEATURES)} features")
    with tempfile.TemporaryDirectory(prefix="serve-ml-seq-") as tmp:
        root = Path(tmp)
        build(root)
        catalog = Catalog.scan(root)
        bundle = catalog.live_bundle("seq-01", "7.5kW")
        mod = bundle.modalities["machine"]
        module = mod.model.module  # type: ignore[attr-defined]
        for n in BATCHES:
            w = windows(n)
            x = torch.from_numpy(((np.stack([w[f] for f in FEATURES], -1) - mod.mean) / mod.scale).astype(np.float32))

            def plain(t: torch.Tensor = x) -> None:
                with torch.inference_mode():
                    ((module(t) - t) ** 2).mean(dim=(1, 2)).numpy()

            core, torch_only = [], []
            for _ in range(repeats):
                core.append(n / time_it(lambda w=w, k=n: score_group(bundle, w, k, enable_xgb=False)))  # type: ignore[misc]
                torch_only.append(n / time_it(plain))
            rep.add(Figure(f"serve-ml score_group, batch {n}", "windows/s", core))
            rep.add(Figure(f"plain torch forward, batch {n}", "windows/s", torch_only))
            rep.add(Figure(f"score_group / plain torch, batch {n}", "ratio",
                           [a / b for a, b in zip(core, torch_only, strict=True)]))
        bodies, binary = [], []
        for seed in range(4):
            w = windows(HTTP_WINDOWS, seed=seed + 10)
            bodies.append(orjson.dumps({"equipment_id": "seq-01", "power": "7.5kW",
                                        "columns": {f: w[f].tolist() for f in FEATURES}}))
            binary.append(np.stack([w[f] for f in FEATURES]).astype("<f8").tobytes())
        inproc_w = windows(HTTP_WINDOWS, seed=10)
        json_file, binary_file = write_bodies(bodies), write_bodies(binary)
        query = urlencode({"equipment_id": "seq-01", "power": "7.5kW", "features": ",".join(FEATURES),
                           "steps": STEPS})
        forms = {"JSON columns": (f"{API}/predict/columns", json_file, "application/json"),
                 "binary columns": (f"{API}/predict/columns/binary?{query}", binary_file, BINARY_MEDIA_TYPE)}
        served: dict[str, list[float]] = {name: [] for name in forms}
        inproc: list[float] = []
        with serve_cluster(root) as sc:
            for path, body_file, ctype in forms.values():
                run_load(f"{sc.http_url}{path}", body_file, 2, 1.0, ctype)  # warm
            for _ in range(repeats):  # alternated, so drift hits every form alike
                for name, (path, body_file, ctype) in forms.items():
                    res = run_load(f"{sc.http_url}{path}", body_file, 2, duration_s, ctype)
                    if res.errors:
                        raise RuntimeError(f"{name}: {res.errors} failed requests: {res.error_kinds}")
                    served[name].append(res.rps * HTTP_WINDOWS)
                inproc.append(HTTP_WINDOWS / time_it(lambda: score_columns(catalog, "seq-01", "7.5kW", None, inproc_w,
                                                                           HTTP_WINDOWS, enable_xgb=False)))
        rep.add(Figure(f"in-process score_columns, {HTTP_WINDOWS} windows", "windows/s", inproc))
        for name, runs in served.items():
            rep.add(Figure(f"Serve {name}, {HTTP_WINDOWS} windows, 2 clients", "windows/s", runs))
            ratio = [a / b for a, b in zip(runs, inproc, strict=True)]
            med = sorted(ratio)[len(ratio) // 2]
            target = name == "binary columns"
            rep.add(Figure(f"Serve {name} / in-process", "ratio", ratio, ">= 0.5" if target else None,
                           med >= 0.5 if target else None))
    return rep
