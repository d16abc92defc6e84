"""``serve-ml bench portal``: the operator portal measured in a real browser.

* Fleet page, 1,000 equipment registered with a status each: first render, from the
  navigation's start to the first frame with every tile laid out (the page's own
  ``serve-ml:fleet-rendered`` mark), against the same page with 10 equipment, and the
  ``GET /status`` fetch inside it (Resource Timing) to show where the time goes.
* Equipment page: verdict messages pushed at a fixed rate through the database's
  NOTIFY channel (the path the stream writer takes), counted as they reach the page,
  with the page's animation frames per second over the same window.

The app runs in process on real uvicorn against an embedded PostgreSQL (or
``DATABASE_URL``); the browser is Debian's chromium driven by Selenium (the test
extra, and ``make test-deps`` for the packages).
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from serve_ml.bench.common import Figure, Report
from serve_ml.core.settings import Settings
from serve_ml.deployments.local import create_local_app, serve_in_thread
from serve_ml.operations.alarm_store import LIVE_CHANNEL
from serve_ml.pipelines.schema import migrate
from serve_ml.pipelines.services import EmbeddedPostgres

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
STATUSES = ("normal", "normal", "normal", "warning", "critical")
FLEET_TARGET_MS = 1000.0
UPDATES_TARGET_HZ = 10.0


async def _seed(url: str, n: int, prefix: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        ids = [f"{prefix}-{i:04d}" for i in range(n)]
        await conn.executemany(
            "INSERT INTO serve_ml_equipment (equipment_id, name, type, location) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (equipment_id) DO NOTHING",
            [(eq, f"Machine {i}", ("press", "pump", "mill")[i % 3],
              [f"site-{i % 4}", f"hall-{i % 10}", f"line-{i % 25}"]) for i, eq in enumerate(ids)])
        # updated a day ahead: nothing writes these rows during the bench, and a status
        # older than stale_after_s reads as no_data
        await conn.executemany(
            "INSERT INTO serve_ml_status (equipment_id, status, reasons, last_reading_at, updated_at) "
            "VALUES ($1, $2, '[]', now(), now() + interval '1 day') ON CONFLICT (equipment_id) DO NOTHING",
            [(eq, STATUSES[i % len(STATUSES)]) for i, eq in enumerate(ids)])
    finally:
        await conn.close()


@contextmanager
def _database() -> Iterator[str]:
    configured = Settings().database_url
    if configured:
        yield configured
        return
    with tempfile.TemporaryDirectory(prefix="serve-ml-bench-portal-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pgdata")
        url = pg.start()
        try:
            yield url
        finally:
            pg.stop()


def _browser() -> Any:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:  # the product does not depend on selenium
        raise SystemExit("bench portal needs selenium: pip install -e '.[test]'") from exc
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        raise SystemExit("bench portal needs Debian's chromium and chromium-driver: make test-deps")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


_RENDERED = """
const m = performance.getEntriesByName("serve-ml:fleet-rendered")[0];
if (!m) return null;
const s = performance.getEntriesByType("resource").find((e) => e.name.includes("/api/v1/serve-ml/status"));
return {ms: m.startTime, tiles: m.detail.tiles, status_ms: s ? s.duration : null};
"""


def _fleet_once(driver: Any, url: str, timeout_s: float = 30.0) -> dict[str, float]:
    driver.get("about:blank")
    driver.get(f"{url}/#/fleet")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = driver.execute_script(_RENDERED)
        if got:
            return got
        time.sleep(0.02)
    raise TimeoutError("the fleet page never rendered")


# What the stream sends for a machine with seven sensors, a classifier and a RUL head
# (``pipelines.live``): every part of the equipment page is drawn on every message.
_SENSORS = {"air_temp_k": 300.0, "process_temp_k": 310.0, "speed_rpm": 1500.0, "torque_nm": 40.0,
            "tool_wear_min": 100.0, "vibration_rms_mm_s": 1.2, "current_a": 11.0}
_PROBS = {"none": 0.9, "HDF": 0.04, "OSF": 0.03, "PWF": 0.02, "TWF": 0.01}


def _verdict(eq: str, i: int) -> str:
    now_ms = int(time.time() * 1000)
    sensors = {f: v * (1 + 0.01 * (i % 5)) for f, v in _SENSORS.items()}
    return orjson.dumps({
        "type": "verdicts", "equipment_id": eq, "power": "7.5kW", "model_version": "bench", "n": 1, "anomalies": 0,
        "status": "normal", "reasons": [], "thresholds": {"thermal": 0.5, "mechanical": 0.4},
        "points": {"t_ms": [now_ms], "score": [0.1], "anomaly": [False],
                   "modalities": {"thermal": [0.2 + 0.1 * (i % 5)], "mechanical": [0.1 + 0.05 * (i % 7)]},
                   "sensors": {f: [v] for f, v in sensors.items()}},
        "last": {"sensors": sensors, "fault_label": "none", "fault_probabilities": _PROBS,
                 "rul": 80.0 - i % 10, "rul_band": {"lower": 70.0 - i % 10, "upper": 90.0 - i % 10, "unit": "cycles"}},
        "classified": {"t_ms": now_ms, "fault_label": "none", "fault_probabilities": _PROBS},
    }).decode()


def _push(url: str, eq: str, rate_hz: float, seconds: float, stop: threading.Event) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            t0, i = time.monotonic(), 0
            while not stop.is_set() and time.monotonic() - t0 < seconds:
                await conn.execute("SELECT pg_notify($1, $2)", LIVE_CHANNEL, _verdict(eq, i))
                i += 1
                await asyncio.sleep(max(0.0, t0 + i / rate_hz - time.monotonic()))
        finally:
            await conn.close()
    asyncio.run(run())


_FRAMES = """
window.__frames = 0;
const tick = () => { window.__frames++; requestAnimationFrame(tick); };
requestAnimationFrame(tick);
return Number(document.getElementById("eq-points").textContent);
"""


def _equipment_rate(driver: Any, url: str, db: str, eq: str, rate_hz: float, seconds: float) -> dict[str, float]:
    driver.get("about:blank")
    driver.get(f"{url}/#/equipment/{eq}")
    deadline = time.monotonic() + 20
    while driver.execute_script("const e = document.getElementById('eq-live'); return e && e.textContent") != "live":
        if time.monotonic() > deadline:
            raise TimeoutError("the equipment page's WebSocket never opened")
        time.sleep(0.05)
    stop = threading.Event()
    pusher = threading.Thread(target=_push, args=(db, eq, rate_hz, seconds + 2, stop), daemon=True)
    pusher.start()
    time.sleep(1.0)  # past the first messages
    before = driver.execute_script(_FRAMES)
    t0 = time.monotonic()
    time.sleep(seconds)
    after, frames = driver.execute_script("return [Number(document.getElementById('eq-points').textContent), "
                                          "window.__frames]")
    elapsed = time.monotonic() - t0
    stop.set()
    pusher.join(10)
    return {"updates_hz": (after - before) / elapsed, "fps": frames / elapsed}


@contextmanager
def _portal(n: int) -> Iterator[tuple[str, str, Any]]:
    """A fresh database holding ``n`` equipment, the app on it, a browser: (url, dsn, driver)."""
    with _database() as db, tempfile.TemporaryDirectory(prefix="serve-ml-bench-root-") as root:
        asyncio.run(_seed(db, n, f"bench{n}"))
        with serve_in_thread(create_local_app(Settings(root=Path(root), database_url=db))) as hostport:
            driver = _browser()
            try:
                yield f"http://{hostport}", db, driver
            finally:
                driver.quit()


def run(n_equipment: int = 1000, rounds: int = 5, rate_hz: float = 20.0, seconds: float = 10.0) -> Report:
    rep = Report(f"portal in chromium: fleet of {n_equipment:,} vs 10, equipment page at {rate_hz:g} pushes/s")
    with _portal(n_equipment) as (url, db, driver):
        # the same browser alternates with nothing else: the baseline needs a database
        # of its own (10 equipment), so it runs after, in the same invocation
        big = [_fleet_once(driver, url) for _ in range(rounds)]
        rates = [_equipment_rate(driver, url, db, f"bench{n_equipment}-0000", rate_hz, seconds) for _ in range(3)]
    with _portal(10) as (url, _db, driver):
        small = [_fleet_once(driver, url)["ms"] for _ in range(rounds)]
    fleet = rep.add(Figure(f"fleet first render, {int(big[0]['tiles']):,} tiles", "ms", [b["ms"] for b in big],
                           target=f"<= {FLEET_TARGET_MS:g}"))
    fleet.met = fleet.median <= FLEET_TARGET_MS
    rep.add(Figure("  of which GET /status", "ms", [b["status_ms"] or 0.0 for b in big]))
    rep.add(Figure("fleet first render, 10 tiles (baseline)", "ms", small))
    rep.add(Figure("  ratio 1,000 / 10", "x", [b["ms"] / s for b, s in zip(big, small, strict=True)]))
    up = rep.add(Figure("equipment page updates received", "per s", [r["updates_hz"] for r in rates],
                        target=f">= {UPDATES_TARGET_HZ:g}", note=f"pushed at {rate_hz:g}/s through NOTIFY"))
    up.met = up.median >= UPDATES_TARGET_HZ
    rep.add(Figure("equipment page animation frames", "per s", [r["fps"] for r in rates],
                   note="requestAnimationFrame callbacks while updates arrive (60 is every frame)"))
    return rep
