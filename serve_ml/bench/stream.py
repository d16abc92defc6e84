"""``bench stream``: readings/s from Kafka to committed rows in PostgreSQL, against the
raw consume rate of the same broker measured in the same run; then produce->stored
and produce->alert-published latency at a fixed input rate.

Runs on the embedded PostgreSQL and Tansu (or DATABASE_URL / KAFKA_BOOTSTRAP) and a
local Ray instance for the scorer actor(s).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import multiprocessing
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import ray
from aiokafka import AIOKafkaConsumer

from serve_ml.bench import stream_ops
from serve_ml.bench.common import Figure, Report
from serve_ml.bench.stream_fleet import FleetKind, fleet_root, machines
from serve_ml.core.settings import Settings
from serve_ml.pipelines.simulator import Machine, run_kafka
from serve_ml.pipelines.stack import Stack, start_stack


async def raw_consume(bootstrap: str, topic: str, n: int) -> float:
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-raw-{time.time_ns()}",
                         enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=5000)
    await c.start()
    try:
        got, t0 = 0, time.perf_counter()
        while got < n:
            batch = await c.getmany(timeout_ms=500, max_records=5000)
            got += sum(len(v) for v in batch.values())
            await c.commit()
        return got / (time.perf_counter() - t0)
    finally:
        await c.stop()


async def stored(url: str, since: dt.datetime) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT count(*) FROM serve_ml_predictions WHERE time >= $1", since)
    finally:
        await conn.close()


async def latencies(url: str, since: dt.datetime) -> tuple[float, float]:
    conn = await asyncpg.connect(url)
    try:
        r = await conn.fetchrow(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50, "
            "percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99 FROM ("
            "SELECT extract(epoch FROM scored_at - time) * 1000 AS ms FROM serve_ml_predictions WHERE time >= $1) x",
            since)
        return float(r["p50"]), float(r["p99"])
    finally:
        await conn.close()


async def alert_latencies(bootstrap: str, topic: str, since: dt.datetime) -> list[float]:
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                         enable_auto_commit=False, group_id=None)
    await c.start()
    out: list[float] = []
    try:
        while True:
            batch = await c.getmany(timeout_ms=2000)
            if not batch:
                return out
            for recs in batch.values():
                for r in recs:
                    m = orjson.loads(r.value)
                    at = dt.datetime.fromisoformat(m["at"])
                    if m["event"] == "opened" and at >= since:
                        out.append(r.timestamp - at.timestamp() * 1000)
    finally:
        await c.stop()


def wait_stored(url: str, since: dt.datetime, n: int, timeout_s: float) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if asyncio.run(stored(url, since)) >= n:
            return time.perf_counter() - t0
        time.sleep(0.2)
    raise TimeoutError(f"only {asyncio.run(stored(url, since))} of {n} stored within {timeout_s}s")


def wait_committed(stack: Stack, n: int, timeout_s: float) -> dict[str, dict[str, Any]]:
    """The scorers' health once they have committed ``n`` readings to PostgreSQL."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        h = scorers(stack)
        if sum(v.get("stored", 0) + v.get("duplicates", 0) for v in h.values()) >= n:
            return h
        time.sleep(0.2)
    raise TimeoutError(f"not all {n} readings committed within {timeout_s}s")


def scorers(stack: Stack) -> dict[str, dict[str, Any]]:
    """The scorer actors' health (not the bridge's or the notifier's)."""
    return {k: v for k, v in stack.health().items() if k.startswith("stream-")}


def committed_between(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> tuple[int, float]:
    """Readings committed between two health snapshots, and the seconds between the
    commits that bound them, as the scorers stamped them: no polling interval in the
    figure (polling the database every 200 ms left ±15 % on a two-second run, and
    polling the actors every 20 ms slowed them down)."""
    def done(h: dict[str, dict[str, Any]]) -> int:
        return sum(v.get("stored", 0) + v.get("duplicates", 0) for v in h.values())

    def stamp(h: dict[str, dict[str, Any]]) -> float:
        return max(v["last_stored_at"] for v in h.values() if v.get("last_stored_at"))

    return done(after) - done(before), stamp(after) - stamp(before)


def stage_us(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], n: int) -> dict[str, float]:
    """Wall time per reading of each stage of the scorers' pipeline between two health
    snapshots (the first taken once consumption started, so the group join's empty
    polls do not count): the stage that approaches the end-to-end time per reading is
    the one that limits it. Empty polls include those after the last batch, until the
    second snapshot (at most one 200 ms polling interval)."""
    names = {"fetch_s": "fetch", "poll_empty_s": "polls that found no records", "lag_s": "lag bookkeeping",
             "prepare_s": "decode+score+encode", "write_s": "write (COPY + alerts + commit)",
             "wait_write_s": "waiting for the previous write"}
    return {label: sum(h.get(key, 0.0) - before.get(name, {}).get(key, 0.0) for name, h in after.items()) / n * 1e6
            for key, label in names.items()}


def throughput_round(stack: Stack, s: Settings, n: int, fleet: list[Machine], *, keep_actors: bool) -> dict[str, Any]:
    """One backlog of ``n`` readings: the produce rate, the raw consume rate of the same
    broker (the baseline), then fresh scorer actors through to PostgreSQL. Kept actors
    stay in the group for what follows (a new member waits out the old ones' session
    timeout before its first fetch)."""
    t0 = dt.datetime.now(dt.UTC)
    p0 = time.perf_counter()
    asyncio.run(run_kafka(stack.bootstrap, s.features_topic, fleet, 0, total=n))
    produce_rate = n / (time.perf_counter() - p0)
    raw = asyncio.run(raw_consume(stack.bootstrap, s.features_topic, n))
    stack.start_actors()
    try:
        # Clock starts at the first committed batch once every actor holds partitions:
        # actor start-up, bundle loading and the group's joins and rebalances are not
        # stream throughput (an actor that joins late stops the group while the
        # partitions move: one such round read 51k against 118k and 131k).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            h0 = scorers(stack)
            if (all(v.get("partitions") for v in h0.values())
                    and any(v.get("last_stored_at") for v in h0.values())):
                break
            time.sleep(0.05)
        h1 = wait_committed(stack, n, timeout_s=600)
        if (got := asyncio.run(stored(stack.database_url, t0))) != n:
            raise RuntimeError(f"the scorers report {n} readings stored, PostgreSQL holds {got}")
    finally:
        if not keep_actors:
            stack.stop_actors()
    count, e2e_s = committed_between(h0, h1)
    return {"produce": produce_rate, "raw": raw, "e2e": count / e2e_s, "timed": count,
            "stages": stage_us(h0, h1, count)}

_FLEET_NAMES = {"dense": "", "cascade": "cascade-bundle (derived features, gate -> XGBoost) ",
                "sequence": "sequence-bundle (LSTM gate + RUL) "}


def run(root: Path, n: int = 100_000, rate_hz: float = 10_000, rate_seconds: float = 10.0, consumers: int = 2,
        n_machines: int = 16, rounds: int = 3, compare_with: int | None = 1, operations: bool = True,
        ws_clients: int = 0, fleet_kind: FleetKind = "dense", producer_process: bool = True) -> Report:
    """``rounds`` backlogs through ``consumers`` scorer actors and, alternating with
    them, through ``compare_with`` actors (None: no comparison rounds). With
    ``operations``, the fleet is registered with thresholds, two notification sinks
    deliver to a local receiver, and WebSocket clients time the live pushes
    (``bench.stream_ops``). With ``ws_clients``, each round is run a second time with
    that many WebSocket clients connected to the fleet's live streams. ``fleet_kind``
    picks the machines and their bundles (``bench.stream_fleet``); with ``cascade``
    the classifier is enabled.

    The latency phase's producer runs in a process of its own (``producer_process``),
    as a factory's producers do: in this one it would share the interpreter lock with
    the API server and the WebSocket clients that time the pushes, and every hop of a
    push would queue behind its sends."""
    fleet = machines(n_machines, kind=fleet_kind)
    rep = Report(f"bench stream: {rounds} x {n} readings from {n_machines} {_FLEET_NAMES[fleet_kind]}"
                 f"machines through Kafka -> scorer -> "
                 f"PostgreSQL ({consumers} scorer actor(s)"
                 + (f"; alternating with {compare_with})" if compare_with else ")"))
    receiver = stream_ops.Receiver() if operations else None
    pushes: list[float] = []
    with tempfile.TemporaryDirectory(prefix="serve-ml-stream-") as tmp:
        s = Settings(state_dir=Path(tmp), root=fleet_root(Path(tmp), n_machines, root, kind=fleet_kind),
                     stream_consumers=consumers, batch_wait_ms=50, enable_xgb=fleet_kind == "cascade",
                     notifications_file=receiver.sinks_file(Path(tmp)) if receiver else None)
        other = s.model_copy(update={"stream_consumers": compare_with}) if compare_with else None
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        stack: Stack = start_stack(s, actors=False)
        if operations:
            asyncio.run(stream_ops.seed(stack.database_url, [m.equipment_id for m in fleet]))
        try:
            res, cmp, crowded, crowds = [], [], [], []
            for i in range(rounds):
                if other is not None:
                    stack.settings = other
                    cmp.append(throughput_round(stack, other, n, fleet, keep_actors=False))
                stack.settings = s
                if ws_clients:
                    crowd = stream_ops.Crowd(s, stack.database_url, [m.equipment_id for m in fleet], ws_clients)
                    with crowd.connected():
                        crowded.append(throughput_round(stack, s, n, fleet, keep_actors=False))
                    crowds.append(crowd.result)
                res.append(throughput_round(stack, s, n, fleet, keep_actors=i == rounds - 1))
            # Latency at a fixed rate, with one machine in a fault so alerts open.
            t1 = dt.datetime.now(dt.UTC)
            per_machine = rate_hz / 4
            total = int(rate_hz * rate_seconds)
            paced = machines(4, faulty=1, kind=fleet_kind)
            with contextlib.ExitStack() as live:
                produce = _PacedProducer(live) if producer_process else None
                watcher = None
                if operations:
                    address = live.enter_context(stream_ops.api_server(s, stack.database_url))
                    ready = threading.Event()
                    followed = list(dict.fromkeys(m.equipment_id for m in paced))[:2]
                    watcher = ThreadWithResult(lambda: asyncio.run(stream_ops.push_latencies(
                        address, followed, rate_seconds + 3, ready)))
                    ready.wait(10)
                if produce is not None:
                    produce(stack.bootstrap, s.features_topic, paced, per_machine, total)
                else:
                    asyncio.run(run_kafka(stack.bootstrap, s.features_topic, paced, per_machine, total=total))
                if watcher is not None:
                    pushes = sorted(watcher.result())
            wait_stored(stack.database_url, t1, total, timeout_s=120)
            p50, p99 = asyncio.run(latencies(stack.database_url, t1))
            alerts = sorted(asyncio.run(alert_latencies(stack.bootstrap, s.alerts_topic, t1)))
            delivered = asyncio.run(_delivered(stack.database_url)) if operations else None
        finally:
            stack.stop()
            ray.shutdown()
            if receiver is not None:
                receiver.stop()
    e2e = [r["e2e"] for r in res]
    mid = statistics.median(e2e)
    rep.add(Figure("produce rate (aiokafka, acks=all)", "readings/s", [r["produce"] for r in res]))
    rep.add(Figure("raw consume rate, same broker (baseline)", "readings/s", [r["raw"] for r in res]))
    rep.add(Figure(f"end to end: committed to PostgreSQL ({consumers} actors)", "readings/s", e2e, ">= 100,000",
                   mid >= 100_000))
    rep.add(Figure("end to end / raw consume", "ratio", [r["e2e"] / r["raw"] for r in res]))
    rep.add(Figure("readings in the timed window (all actors in the group)", "readings", [r["timed"] for r in res]))
    if cmp:
        rep.add(Figure(f"end to end, {compare_with} actor(s), alternating", "readings/s", [r["e2e"] for r in cmp]))
    if crowded:
        stream_ops.crowd_figures(rep, ws_clients, [r["e2e"] for r in crowded], mid, crowds)
    for stage in res[0]["stages"]:
        rep.add(Figure(f"scorer stage: {stage}", "µs/reading", [r["stages"][stage] for r in res]))
    rep.add(Figure(f"produce -> stored p50 at {rate_hz:g}/s", "ms", [p50]))
    rep.add(Figure(f"produce -> stored p99 at {rate_hz:g}/s", "ms", [p99]))
    if alerts:
        a99 = alerts[min(len(alerts) - 1, int(len(alerts) * 0.99))]
        rep.add(Figure(f"produce -> alert published p50 ({len(alerts)} alerts)", "ms", [alerts[len(alerts) // 2]]))
        rep.add(Figure(f"produce -> alert published p99 ({len(alerts)} alerts)", "ms", [a99], "<= 1000", a99 <= 1000))
    else:
        rep.add(Figure("alerts published", "count", [0.0], ">= 1", False))
    if operations:
        if pushes:
            w99 = pushes[min(len(pushes) - 1, int(len(pushes) * 0.99))]
            rep.add(Figure(f"produce -> WebSocket push p50 ({len(pushes)} pushes)", "ms", [pushes[len(pushes) // 2]]))
            rep.add(Figure(f"produce -> WebSocket push p99 ({len(pushes)} pushes)", "ms", [w99], "<= 250",
                           w99 <= 250))
        else:
            rep.add(Figure("WebSocket pushes", "count", [0.0], ">= 1", False))
        rep.add(Figure("notifications delivered (2 sinks)", "count", [float(delivered or 0)]))
    return rep


def _produce(bootstrap: str, topic: str, fleet: list[Machine], per_machine_hz: float, total: int) -> int:
    return asyncio.run(run_kafka(bootstrap, topic, fleet, per_machine_hz, total=total))


class _PacedProducer:
    """``run_kafka`` in a child process, started (and its imports done) before the
    clock starts; closed with ``stack``."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._pool = stack.enter_context(ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")))
        self._pool.submit(_ready).result(timeout=120)

    def __call__(self, bootstrap: str, topic: str, fleet: list[Machine], per_machine_hz: float, total: int) -> int:
        return self._pool.submit(_produce, bootstrap, topic, fleet, per_machine_hz, total).result()


def _ready() -> None:
    """Nothing: unpickling it makes the child import this module (the simulator,
    aiokafka, ray) before the clock starts rather than during the timed run."""


async def _delivered(database_url: str, wait_s: float = 10.0) -> int:
    """Deliveries done once the notifier caught up (or after ``wait_s``)."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + wait_s
        while await conn.fetchval("SELECT count(*) FROM serve_ml_deliveries WHERE status = 'pending'") and \
                time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        return int(await conn.fetchval("SELECT count(*) FROM serve_ml_deliveries WHERE status = 'delivered'"))
    finally:
        await conn.close()


class ThreadWithResult:
    """Run ``fn`` on a thread (its own event loop); ``result()`` joins and returns it."""

    def __init__(self, fn: Any) -> None:
        self._out: list[Any] = []
        self._err: list[BaseException] = []

        def target() -> None:
            try:
                self._out.append(fn())
            except BaseException as exc:  # surfaced by result()
                self._err.append(exc)

        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    def result(self, timeout_s: float = 60) -> Any:
        self._thread.join(timeout_s)
        if self._err:
            raise self._err[0]
        return self._out[0] if self._out else []
