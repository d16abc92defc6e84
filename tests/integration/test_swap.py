"""Hot swap under steady load: zero failed requests, and every response names the
version that scored it, switching exactly once, on both the single-row (ingress)
and bulk (equipment deployment) paths."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import build_sim_bundle
from tests.fixtures import graph_quiet
from tests.integration.conftest import ADMIN
from tests.samples import sim_rows

pytestmark = pytest.mark.integration


def _loop(url: str, stop: threading.Event, out: list[tuple[str, int, str | None]]) -> None:
    row = sim_rows("normal", 1, "7.5kW")[0]
    reading = {"equipment_id": "press-02", "power": "7.5kW", "features": row}
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            for path, body in (("/predict", reading), ("/predict/bulk", {"readings": [reading] * 20})):
                try:
                    r = c.post(path, json=body)
                    item = r.json() if path == "/predict" else r.json()["results"][0]
                    out.append((path, r.status_code, item.get("model_version")))
                except Exception as exc:  # counted as a failure
                    out.append((path, 0, type(exc).__name__))


def test_swap_under_load(cluster, http: httpx.Client, serve_root: Path) -> None:
    results: list[tuple[str, int, str | None]] = []
    stop = threading.Event()
    t = threading.Thread(target=_loop, args=(str(http.base_url), stop, results))
    t.start()
    try:
        graph_quiet()
        time.sleep(2)
        build_sim_bundle(serve_root, "press-02", "7.5kW", "2.0.0", power_range_kw=(5.5, 100.0))
        report = http.post("/sync", headers=ADMIN).json()
        assert report["added"] == ["press-02/7.5kW/2.0.0"] and report["converged"]
        time.sleep(3)
    finally:
        stop.set()
        t.join(30)
    failures = [r for r in results if r[1] != 200]
    print(f"requests={len(results)} failures={len(failures)}")
    assert not failures, failures[:5]
    for path in ("/predict", "/predict/bulk"):
        seq = [v for p, _, v in results if p == path]
        switches = [i for i in range(1, len(seq)) if seq[i] != seq[i - 1]]
        assert seq[0] == "1.0.0" and seq[-1] == "2.0.0", (path, seq[0], seq[-1])
        assert len(switches) == 1, (path, switches)  # never flips back


def test_every_dashboard_metric_is_exported(cluster, http: httpx.Client, serve_root: Path) -> None:
    """Makes a swap of its own first, whatever ran before: a power bucket that
    appears and goes again, so what is live afterwards is what it was before."""
    from tests.dashboard import dashboard_metrics

    graph_quiet()
    build_sim_bundle(serve_root, "mill-01", "11kW", "1.0.0", power_range_kw=(500.0, 600.0), epochs=2)
    try:
        assert http.post("/sync", headers=ADMIN).json()["added"] == ["mill-01/11kW/1.0.0"]
    finally:
        shutil.rmtree(serve_root / "mill-01" / "11kW")
        assert http.post("/sync", headers=ADMIN).json()["removed"] == ["mill-01/11kW/1.0.0"]

    http.post("/predict/bulk", json={"readings": [{"equipment_id": "press-02", "power": "7.5kW",
                                                   "features": sim_rows("overstrain", 1, "7.5kW")[0]}] * 5})
    wanted = dashboard_metrics(stream=False)  # the stream's: tests/integration/test_stream_metrics.py
    deadline, missing = time.monotonic() + 60, wanted
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{cluster.metrics_port}/metrics", timeout=10).text
        missing = {m for m in wanted if m not in text}
        if not missing:
            break
        time.sleep(2)
    assert not missing, sorted(missing)
