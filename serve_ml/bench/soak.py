"""``bench soak``: HTTP and stream load together for N minutes, with a live-version
swap every 20 s and one injected fault per minute, then exact counts.

Faults rotate: kill the stream actor, kill an equipment replica, stop PostgreSQL for
10 s, restart the (embedded, in-memory) broker. Readings the broker had acknowledged
but not yet delivered when it restarted are lost by that broker's design; they are
counted apart from any other loss, which must be zero.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson

from serve_ml.bench.common import Figure, Report
from serve_ml.bench.loadgen import LoadResult, run_load, write_bodies
from serve_ml.bench.memory import MemorySampler
from serve_ml.bench.servers import API
from serve_ml.core.settings import Settings

EQ, POWER = "press-02", "7.5kW"
MACHINES = "press-02:7.5kW,pump-03:5.5kW:overstrain,mill-01:7.5kW:normal:ai4i"
SWAP_EVERY_S = 20.0
BROKER_LOSS_WINDOW_S = 30.0


def http_errors_by_status(metrics_port: int) -> dict[str, float]:
    """4xx/5xx answers the ingress counted (``serve_ml_requests_total``), by status."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for m in re.finditer(r'^ray_serve_ml_requests_total\{([^}]*)\} ([0-9.e+]+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("status", "200") >= "400":
            key = f'{labels.get("endpoint")} {labels["status"]}'
            out[key] = out.get(key, 0.0) + float(m.group(2))
    return out


def run(source: Path, minutes: float = 10.0, http_clients: int = 4, rate_hz: float = 50.0) -> Report:
    from serve_ml.bench.producer import SteadyProducer
    from serve_ml.bench.soak_faults import BROKER_OUTAGES, FAULTS, DeadLetterWatcher, lost_and_duplicated
    from serve_ml.bundles.builder import BuildSpec, build_bundle
    from serve_ml.bundles.demo import TORQUE_SPEED
    from serve_ml.bundles.simulation import MECHANICAL, THERMAL, MachineSpec, simulate_dataset
    from serve_ml.core.ports import free_port
    from serve_ml.deployments.launch import app_args_from_config, start_cluster
    from serve_ml.pipelines.simulator import parse_machines
    from serve_ml.pipelines.stack import start_stack

    duration_s = minutes * 60
    BROKER_OUTAGES.clear()  # a second run in the same process counts only its own
    token = "bench-soak-token"
    os.environ["SERVE_ML_ADMIN_TOKEN"] = token  # the replicas inherit it from this process
    auth = {"Authorization": f"Bearer {token}"}
    rep = Report(f"bench soak: {minutes:g} min of HTTP ({http_clients}+{http_clients // 2} clients) and stream "
                 f"({rate_hz:g}/s x 3 machines) load, a swap every {SWAP_EVERY_S:g} s, one fault per minute")
    with tempfile.TemporaryDirectory(prefix="serve-ml-soak-") as tmp:
        root = Path(tmp) / "root"
        shutil.copytree(source, root)
        cols, labels = simulate_dataset(2000, 100, spec=MachineSpec.for_power(POWER), seed=3)
        build_bundle(BuildSpec(equipment_id=EQ, power=POWER, model_version="2.0.0", power_range_kw=(5.5, 100.0),
                               power_source=TORQUE_SPEED, modalities={"thermal": list(THERMAL),
                                                                      "mechanical": list(MECHANICAL)}, epochs=20),
                     cols, labels, root, data="simulator:bench", progress=lambda _m: None)
        row = {k: float(v[0]) for k, v in cols.items()}
        single = write_bodies([orjson.dumps({"equipment_id": EQ, "power": POWER, "features": row})])
        bulk = write_bodies([orjson.dumps({"readings": [{"equipment_id": EQ, "power": POWER, "features": row}] * 100})])
        settings = Settings(root=root, http_port=free_port(), state_dir=Path(tmp) / "state", batch_wait_ms=50,
                            simulate_rate_hz=0)
        cluster = start_cluster(settings, app_args_from_config(root=str(root)), metrics_port=free_port())
        stack = None
        try:
            stack = start_stack(settings)
            base = f"{cluster.http_url}{API}"
            loads: dict[str, LoadResult] = {}
            threads = [threading.Thread(target=lambda: loads.__setitem__(
                "single", run_load(f"{base}/predict", single, http_clients, duration_s))),
                threading.Thread(target=lambda: loads.__setitem__(
                    "bulk", run_load(f"{base}/predict/bulk", bulk, max(1, http_clients // 2), duration_s)))]
            t0 = dt.datetime.now(dt.UTC)
            pg_pid = stack.postgres.pid if stack.postgres else None
            with MemorySampler(lambda: [os.getpid(), *([pg_pid] if pg_pid else [])]) as mem, \
                    DeadLetterWatcher(stack.bootstrap, settings.dead_letter_topic) as dead, \
                    SteadyProducer(stack, parse_machines(MACHINES), rate_hz, seed=11) as producer:
                for t in threads:
                    t.start()
                start = time.monotonic()
                swaps = swap_failures = 0
                faults: list[str] = []
                next_swap, next_fault = start + SWAP_EVERY_S, start + 30.0
                while time.monotonic() - start < duration_s - 5:
                    now = time.monotonic()
                    if now >= next_swap:
                        version = "2.0.0" if swaps % 2 == 0 else "1.0.0"
                        r = httpx.post(f"{base}/bundles/{EQ}/{POWER}/activate", headers=auth, timeout=60,
                                       json={"model_version": version, "reason": "soak"})
                        swaps += 1
                        swap_failures += r.status_code != 200
                        next_swap += SWAP_EVERY_S
                    elif now >= next_fault:
                        name, inject = FAULTS[len(faults) % len(FAULTS)]
                        faults.append(f"{name}: {inject(stack, cluster)}")
                        next_fault += 60.0
                    time.sleep(0.2)
                for t in threads:
                    t.join(duration_s + 120)
                producer.stop()  # nothing new from here on: count what was sent
                counts = lost_and_duplicated(stack, producer, dead, t0, BROKER_LOSS_WINDOW_S)
            server_errors = http_errors_by_status(cluster.metrics_port)
        finally:
            if stack is not None:
                stack.stop_actors()
            cluster.stop()
            if stack is not None:
                stack.stop()
    http_requests = sum(r.requests for r in loads.values())
    http_errors = sum(r.errors for r in loads.values())
    rep.add(Figure("duration", "min", [minutes]))
    rep.add(Figure("HTTP requests (single + bulk of 100)", "count", [float(http_requests)]))
    kinds = {f"{name} {k}": v for name, r in loads.items() for k, v in (r.error_kinds or {}).items() if v}
    rep.add(Figure("HTTP failed requests", "count", [float(http_errors)], "0", http_errors == 0,
                   note=f"client side {kinds or 'none'}; server side by status {server_errors or 'none'}"))
    rep.add(Figure("HTTP single p99", "ms", [loads["single"].p99_ms]))
    rep.add(Figure("live-version swaps (failed calls)", "count", [float(swaps)], "0 failed", swap_failures == 0,
                   note=f"{swap_failures} failed"))
    rep.add(Figure("faults injected", "count", [float(len(faults))], note="; ".join(faults)))
    rep.add(Figure("readings acknowledged by the broker", "count", [float(counts["acked"])]))
    rep.add(Figure("readings stored", "count", [float(counts["stored"])]))
    rep.add(Figure("readings refused to the dead-letter topic", "count", [float(counts["dead_lettered"])],
                   note=str(counts["dead_letter_reasons"] or "none")))
    rep.add(Figure("readings lost (not refused, not the in-memory broker)", "count", [float(counts["lost"])],
                   "0", counts["lost"] == 0, note=", ".join(counts["lost_examples"])))
    rep.add(Figure("readings lost in the in-memory broker's restarts", "count", [float(counts["lost_in_broker"])]))
    rep.add(Figure("readings stored twice", "count", [float(counts["duplicated"])], "0", counts["duplicated"] == 0))
    rep.add(Figure("peak RSS, all processes", "MiB", [mem.peak_total / 2**20]))
    for name, rss in sorted(mem.peak.items(), key=lambda kv: -kv[1])[:8]:
        rep.add(Figure(f"peak RSS {name}", "MiB", [rss / 2**20]))
    return rep
