"""The stream pipeline end to end on real services: embedded PostgreSQL, the Tansu
broker, Mosquitto and Ray actors in the session's Ray instance."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import asyncpg
import numpy as np
import orjson
import pytest

from serve_ml.pipelines.simulator import Machine, run_kafka, run_mqtt
from serve_ml.pipelines.stack import Stack
from tests.streamkit import consume_all, count, now, produce_raw, q, resolve_open_alerts, wait_count, write_rows

pytestmark = pytest.mark.integration


def test_storage_mode_is_reported(stack: Stack) -> None:
    assert stack.mode == "postgres-partitioned"  # no timescaledb extension on these machines
    parts = q(stack, "SELECT inhrelid::regclass::text AS p FROM pg_inherits "
                     "WHERE inhparent = 'serve_ml_predictions'::regclass")
    assert stack.describe()["storage_mode"] == "postgres-partitioned"
    assert all(p["p"].startswith("serve_ml_predictions_p") for p in parts)


def test_n_readings_give_n_predictions(stack: Stack) -> None:
    t0, n = now(), 3000
    sent = asyncio.run(run_kafka(stack.bootstrap, stack.settings.features_topic,
                                 [Machine("press-02", "7.5kW")], 0, total=n, seed=1))
    assert sent == n
    assert wait_count(stack, "serve_ml_predictions", "press-02", t0, n) == n
    assert count(stack, "serve_ml_readings", "press-02", t0) == n
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and stack.health()["stream-0"]["lag"] != 0:
        time.sleep(0.5)
    assert stack.health()["stream-0"]["lag"] == 0  # committed up to the end


def test_malformed_messages_dead_lettered_good_ones_stored(stack: Stack) -> None:
    t0 = now()
    good = [orjson.dumps({"equipment_id": "press-02", "ts": (t0 + dt.timedelta(milliseconds=i)).isoformat(),
                          "power": "7.5kW", "features": {"air_temp_k": 300.0, "process_temp_k": 310.0}})
            for i in range(3)]
    bad = {
        b"not json": "not valid JSON",
        orjson.dumps({"equipment_id": "ghost", "ts": t0.isoformat(), "features": {"air_temp_k": 1.0}}):
            "unknown equipment_id 'ghost'",
        orjson.dumps({"equipment_id": "press-02", "ts": t0.isoformat(), "power": "7.5kW",
                      "features": {"air_temp_k": 300.0}}): "process_temp_k: missing",
        b'{"equipment_id": "press-02", "ts": "' + t0.isoformat().encode() + b'", "features": {"x": NaN}}':
            "features.x: not a finite number",
        b'{"equipment_id": "press-02", "ts": "' + t0.isoformat().encode() + b'", "features": {"x": 1}': "not valid JSON",
        b'{"equipment_id": "press-02", "features": {"x": 1}, "ts": "' + b"9" * 70000 + b'"}': "limit is 65536",
    }
    values = [(b"press-02", good[0]), *[(b"k", v) for v in bad], (b"press-02", good[1]), (b"press-02", good[2])]
    produce_raw(stack, stack.settings.features_topic, values)
    assert wait_count(stack, "serve_ml_predictions", "press-02", t0, 3) == 3
    dlq = {r.value: dict(r.headers) for r in consume_all(stack, stack.settings.dead_letter_topic)}
    for raw, reason in bad.items():
        assert raw in dlq, reason
        assert reason in dlq[raw]["reason"].decode(), (reason, dlq[raw]["reason"])
        assert dlq[raw]["source_topic"].decode() == stack.settings.features_topic


def test_anomaly_opens_exactly_one_alert_and_one_message(stack: Stack) -> None:
    resolve_open_alerts(stack, Machine("mill-01", "7.5kW", ai4i=True))
    t0 = now()
    asyncio.run(run_kafka(stack.bootstrap, stack.settings.features_topic,
                          [Machine("mill-01", "7.5kW", "heat_dissipation", ai4i=True)], 0, total=50, seed=7))
    wait_count(stack, "serve_ml_predictions", "mill-01", t0, 50)
    alerts = q(stack, "SELECT * FROM serve_ml_alerts WHERE equipment_id = 'mill-01' AND opened_at >= $1", t0)
    assert len(alerts) == 1 and alerts[0]["status"] == "open" and alerts[0]["anomalies"] >= 1
    deadline, opened = time.monotonic() + 20, []
    while time.monotonic() < deadline:
        msgs = [orjson.loads(r.value) for r in consume_all(stack, stack.settings.alerts_topic, idle_s=1)]
        opened = [m for m in msgs if m["alert_id"] == alerts[0]["id"] and m["event"] == "opened"]
        if opened:
            break
    assert len(opened) == 1 and opened[0]["equipment_id"] == "mill-01"


def test_mqtt_readings_scored_and_stored(stack: Stack, mosquitto: int) -> None:
    t0 = now()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and stack.health().get("mqtt-bridge", {}).get("state") != "running":
        time.sleep(0.3)
    sent = asyncio.run(run_mqtt("127.0.0.1", mosquitto, [Machine("mill-01", "5.5kW", ai4i=True)], 0, total=200, seed=3))
    assert wait_count(stack, "serve_ml_predictions", "mill-01", t0, sent) == sent == 200
    rows = q(stack, "SELECT DISTINCT power FROM serve_ml_predictions WHERE equipment_id = 'mill-01' AND time >= $1", t0)
    assert {r["power"] for r in rows} <= {"5.5kW", "7.5kW"}


def test_replayed_batch_is_stored_once_and_alerts_once(stack: Stack) -> None:
    """Writes are idempotent on (equipment_id, time): the same batch twice stores once."""
    from serve_ml.bundles.batch import Reading
    from serve_ml.bundles.catalog import Catalog
    from serve_ml.pipelines.encode import Origin, encode_scored
    from serve_ml.pipelines.schema import Partitions
    from serve_ml.pipelines.store import write_batch
    from tests.samples import sim_rows

    cat = Catalog.scan(stack.settings.root)
    rows = sim_rows("overstrain", 20, power="5.5kW", seed=42)
    base = now() + dt.timedelta(hours=2)

    def batch(offsets: range, first_second: int):
        readings = [Reading("press-02", rows[i % 20], "5.5kW") for i in offsets]
        origins = [Origin(base + dt.timedelta(seconds=first_second + k), r.features, "test", 0, first_second + k)
                   for k, r in enumerate(readings)]
        encoded, rejected = encode_scored(cat, readings, origins, enable_xgb=False)
        assert not rejected
        return encoded

    items = batch(range(20), 0)
    # A replay that straddles what is stored: its first half is old (seconds 10-19), its second new (20-29).
    straddle = batch(range(10, 30), 10)

    async def writes():
        conn = await asyncpg.connect(stack.database_url)
        try:
            kw = {"partitions": Partitions(stack.mode), "alerts_topic": "t", "resolve_after": 5}
            return (await write_batch(conn, items, **kw), await write_batch(conn, items, **kw),
                    await write_batch(conn, straddle, **kw))
        finally:
            await conn.close()

    first, second, straddling = asyncio.run(writes())
    assert first.predictions == 20 and first.readings == 20
    assert second.predictions == 0 and second.readings == 0 and second.duplicates == 20
    assert not second.alerts_opened and not second.alerts_resolved
    assert straddling.predictions == 10 and straddling.readings == 10 and straddling.duplicates == 10
    assert count(stack, "serve_ml_predictions", "press-02", base) == 30
    assert count(stack, "serve_ml_readings", "press-02", base) == 30



@pytest.mark.parametrize("xgb", [False, True])
def test_binary_copy_stores_what_asyncpg_stores(stack: Stack, xgb: bool) -> None:
    """PostgreSQL itself reads the column-wise binary COPY rows as the same values
    asyncpg's own encoder stores for the reference rows (read off the verdict dicts)."""
    from serve_ml.bundles.batch import score_readings
    from serve_ml.bundles.catalog import Catalog
    from serve_ml.pipelines.encode import P_COLS, R_COLS, Origin, encode_scored
    from tests.stored_rows import T0, readings, rows_from_verdicts

    cat = Catalog.scan(stack.settings.root)
    rs = readings()
    origins = [Origin(T0 + dt.timedelta(seconds=i, microseconds=i), r.features, "kafka" if i % 4 else "mqtt",
                      None if i % 3 == 0 else 0, None if i % 3 == 0 else i) for i, r in enumerate(rs)]
    encoded, _ = encode_scored(cat, rs, origins, enable_xgb=xgb)
    want_readings, want_preds, _ = rows_from_verdicts(origins, score_readings(cat, rs, enable_xgb=xgb))

    async def both() -> list[list[list[tuple]]]:
        conn = await asyncpg.connect(stack.database_url)
        try:
            out = []
            for table, cols, payload, records in (("serve_ml_readings", R_COLS, encoded.copy_readings(), want_readings),
                                                  ("serve_ml_predictions", P_COLS, encoded.copy_predictions(),
                                                   want_preds)):
                await conn.execute(f"CREATE TEMP TABLE bin (LIKE {table} INCLUDING DEFAULTS); "
                                   f"CREATE TEMP TABLE ref (LIKE {table} INCLUDING DEFAULTS)")
                await conn.copy_to_table("bin", source=payload, columns=cols, format="binary")
                await conn.copy_records_to_table("ref", records=records, columns=cols)
                # json columns compared as text: both sides must have sent the same document
                order = f"SELECT {', '.join(f'{c}::text' for c in cols)} FROM {{}} ORDER BY equipment_id, time"
                out.append([[tuple(r) for r in await conn.fetch(order.format(t))] for t in ("bin", "ref")])
                await conn.execute("DROP TABLE bin, ref")
            return out
        finally:
            await conn.close()

    for stored, reference in asyncio.run(both()):
        assert len(stored) == len(rs) - 2
        assert stored == reference


def test_overlapping_writes_open_and_resolve_alerts_in_batch_order(stack: Stack) -> None:
    """The scorer copies batch N+1 while batch N is still uncommitted; N+1's alert logic
    waits for N (``before_alerts``). Here N opens an alert and is held uncommitted while
    N+1, all normal readings, reaches its alert step: N+1 must see N's alert and resolve
    it. Alert logic run before N committed would not see it, leaving it open for good."""
    from serve_ml.bundles.batch import Reading
    from serve_ml.bundles.catalog import Catalog
    from serve_ml.pipelines.encode import Origin, encode_scored
    from serve_ml.pipelines.schema import Partitions
    from serve_ml.pipelines.store import write_batch
    from serve_ml.pipelines.verdicts import all_verdicts
    from tests.samples import sim_rows

    cat = Catalog.scan(stack.settings.root)
    base = now() + dt.timedelta(hours=3)

    def batch(profile: str, first_second: int, seed: int):
        readings = [Reading("pump-03", f, "5.5kW") for f in sim_rows(profile, 20, power="5.5kW", seed=seed)]
        origins = [Origin(base + dt.timedelta(seconds=first_second + k), r.features, "test", 1, first_second + k)
                   for k, r in enumerate(readings)]
        encoded, rejected = encode_scored(cat, readings, origins, enable_xgb=False)
        assert not rejected
        return encoded

    settle, faulty, normal = batch("normal", 0, 7), batch("overstrain", 100, 42), batch("normal", 200, 7)
    assert not any(v.anomaly for v in all_verdicts(normal.judged))
    assert sum(v.anomaly for v in all_verdicts(faulty.judged)) >= 10

    async def scenario():
        kw = {"partitions": Partitions(stack.mode), "alerts_topic": "t", "resolve_after": 5}
        c1, c2 = await asyncpg.connect(stack.database_url), await asyncpg.connect(stack.database_url)
        try:
            await write_batch(c1, settle, **kw)  # resolves whatever an earlier test left open on pump-03
            copied = asyncio.Event()

            async def hold_first() -> None:  # batch N, copied, waits uncommitted
                copied.set()
                await asyncio.sleep(1.0)

            first = asyncio.create_task(write_batch(c1, faulty, before_alerts=hold_first, **kw))
            await copied.wait()
            second = await write_batch(c2, normal, before_alerts=lambda: asyncio.shield(first), **kw)
            return await first, second
        finally:
            await c1.close()
            await c2.close()

    first, second = asyncio.run(scenario())
    assert len(first.alerts_opened) == 1
    assert second.alerts_resolved == first.alerts_opened
    alert = q(stack, "SELECT * FROM serve_ml_alerts WHERE id = $1", first.alerts_opened[0])[0]
    assert alert["status"] == "resolved"
    # The same alert walked row by row: opened at the first anomaly, resolved at the
    # 5th normal reading after the last one, across the two batches.
    rows = sorted(all_verdicts(faulty.judged) + all_verdicts(normal.judged), key=lambda v: v.time)
    flagged = [k for k, v in enumerate(rows) if v.anomaly]
    assert alert["opened_at"] == rows[flagged[0]].time and alert["last_seen_at"] == rows[flagged[-1]].time
    assert alert["anomalies"] == len(flagged)
    assert alert["peak_score"] == max(rows[k].score for k in flagged)
    assert alert["resolved_at"] == rows[flagged[-1] + 5].time

def test_live_version_changes_persist_and_restore(stack: Stack) -> None:
    """What the ingress records on activate/rollback is what a restart restores."""
    from serve_ml.scoring.history import History, load_state, record_change

    entry = {"at": time.time(), "action": "pin", "equipment_id": "press-02", "power": "5.5kW",
             "from": "1.1.0", "to": "1.0.0", "reason": "it's'; DROP TABLE serve_ml_alerts; --"}
    assert asyncio.run(record_change(History(stack.database_url), entry,
                                     {"version": "1.0.0", "pinned": True, "newest_at_set": None}))
    overrides, history = asyncio.run(load_state(History(stack.database_url)))
    assert overrides[("press-02", "5.5kW")] == {"version": "1.0.0", "pinned": True, "newest_at_set": None}
    assert history[-1]["reason"] == entry["reason"]  # stored verbatim, bound as a parameter
    assert q(stack, "SELECT count(*) AS n FROM serve_ml_alerts")[0]["n"] >= 1  # table still there
    unpin = {**entry, "action": "unpin", "from": "1.0.0", "to": "1.1.0", "reason": "done"}
    assert asyncio.run(record_change(History(stack.database_url), unpin, None))
    overrides, _ = asyncio.run(load_state(History(stack.database_url)))
    assert ("press-02", "5.5kW") not in overrides


def test_catalog_recorded_in_serve_ml_models(stack: Stack) -> None:
    from serve_ml.bundles.catalog import Catalog
    from serve_ml.scoring.history import History, record_catalog

    cat = Catalog.scan(stack.settings.root)
    assert asyncio.run(record_catalog(History(stack.database_url), cat))
    rows = {(r["equipment_id"], r["power"], r["model_version"]): r for r in q(stack, "SELECT * FROM serve_ml_models")}
    live = rows[("mill-01", "7.5kW", "1.0.0")]
    assert live["status"] == "live" and live["activated_at"] is not None and len(live["sha256"]) == 64
    assert len([r for r in rows.values() if r["status"] in ("live", "loaded")]) == len(cat.bundles)


def test_rul_is_stored_and_a_low_rul_opens_and_resolves_an_alert_of_its_own(stack: Stack, tmp_path) -> None:
    """A unit's last cycles drive its RUL below the head's alert level: one alert of
    type 'rul' opens (beside, not instead of, the gate's anomaly alerts) and its event
    carries the RUL; after maintenance (a new unit's early life) it resolves."""
    from serve_ml.bundles.batch import Reading
    from serve_ml.bundles.catalog import Catalog
    from serve_ml.bundles.run_to_failure import simulate_fleet
    from serve_ml.pipelines.encode import Origin, encode_scored
    from tests.conftest import build_rul_bundle

    eq = "rtf-int-01"
    build_rul_bundle(tmp_path, eq, "7.5kW", "1.0.0", alert_below=40.0)
    cat = Catalog.scan(tmp_path)
    fleet = simulate_fleet(2, seed=21, min_life=120, max_life=120)
    wear = np.random.default_rng(0).uniform(0, 200, len(fleet.unit))
    feats = [{**{k: float(v[i]) for k, v in fleet.sensors.items()}, "tool_wear_min": float(wear[i])}
             for i in range(len(fleet.unit))]
    first, second = np.flatnonzero(fleet.unit == "unit-001"), np.flatnonzero(fleet.unit == "unit-002")
    order = [*first, *second[:30]]  # unit 1 to failure, then unit 2 (a new machine) from new
    base = now() + dt.timedelta(hours=5)
    readings = [Reading(eq, feats[i], "7.5kW") for i in order]
    origins = [Origin(base + dt.timedelta(seconds=k), r.features, "test", 1, k) for k, r in enumerate(readings)]
    encoded, rejected = encode_scored(cat, readings, origins, enable_xgb=True)
    assert not rejected

    stats = write_rows(stack, encoded, resolve_after=5)
    stored = q(stack, "SELECT time, rul, rul_lower, rul_upper FROM serve_ml_predictions WHERE equipment_id = $1 "
                      "ORDER BY time", eq)
    assert len(stored) == len(readings) and all(r["rul_lower"] <= r["rul"] <= r["rul_upper"] for r in stored)
    low = [k for k, r in enumerate(stored) if r["rul"] < 40.0]
    assert low and low[0] > 40 and max(low) < len(first) + 5, low  # low late in unit 1's life only
    alerts = q(stack, "SELECT * FROM serve_ml_alerts WHERE equipment_id = $1 AND kind = 'rul'", eq)
    assert len(alerts) == 1 and alerts[0]["status"] == "resolved", alerts
    assert alerts[0]["opened_at"] == stored[low[0]]["time"]
    assert alerts[0]["opened_at"] < alerts[0]["resolved_at"] <= base + dt.timedelta(seconds=len(first) + 10)
    assert set(stats.alerts_opened) >= {alerts[0]["id"]}
    events = [orjson.loads(r["payload"]) for r in q(stack, "SELECT payload FROM serve_ml_outbox WHERE key = $1 "
                                                           "ORDER BY id", eq)]
    rul_events = [e for e in events if e["type"] == "rul"]
    assert [e["event"] for e in rul_events] == ["opened", "resolved"]
    assert rul_events[0]["rul"] == pytest.approx(min(stored[k]["rul"] for k in low))  # the batch's worst
    assert {e["type"] for e in events} <= {"rul", "anomaly"}


def test_sequence_windows_are_refilled_from_the_readings_postgres_stored(stack: Stack, tmp_path) -> None:
    """What a restarted scorer does: its windows start empty, and the readings already
    stored (by the same write path the stream uses) fill them, so its first reading is
    judged on a whole window, equal to the one the scorer before it would have used."""
    from serve_ml.bundles.batch import Reading, in_order, score_groups
    from serve_ml.bundles.catalog import Catalog
    from serve_ml.pipelines.encode import Origin, encode_scored
    from serve_ml.pipelines.schema import Partitions
    from serve_ml.pipelines.store import write_batch
    from serve_ml.pipelines.windows import StreamWindows, pg_history
    from tests.conftest import build_seq_bundle
    from tests.samples import sim_rows

    eq, steps = "seq-int-01", 6
    build_seq_bundle(tmp_path, eq, "7.5kW", "1.0.0", steps=steps)
    cat = Catalog.scan(tmp_path)
    rows = sim_rows("normal", 24, seed=8)
    feats = [{k: r[k] for k in ("air_temp_k", "process_temp_k", "vibration_rms_mm_s", "current_a")} for r in rows]
    base = now() + dt.timedelta(hours=7)
    readings = [Reading(eq, f, "7.5kW") for f in feats]
    origins = [Origin(base + dt.timedelta(seconds=k), f, "kafka", 0, k) for k, f in enumerate(feats)]

    before = StreamWindows()  # the scorer that stored the first 20 readings
    before.bind(origins[:20])
    encoded, rejected = encode_scored(cat, readings[:20], origins[:20], enable_xgb=False, history=before)
    assert not rejected
    before.bind(origins[20:])  # what it would have answered for the last 4, had it lived on
    expected = in_order(4, score_groups(cat, readings[20:], enable_xgb=False, history=before))

    async def scenario():
        pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                await write_batch(conn, encoded, partitions=Partitions(stack.mode), alerts_topic="t", resolve_after=5)
            restarted = StreamWindows()
            await restarted.refill(cat, origins[20:], [eq] * 4, pg_history(pool))
            return restarted
        finally:
            await pool.close()

    restarted = asyncio.run(scenario())
    assert restarted.refilled == steps - 1
    restarted.bind(origins[20:])
    got = in_order(4, score_groups(cat, readings[20:], enable_xgb=False, history=restarted))
    assert [g["modalities"]["motor"]["status"] for g in got] == ["scored"] * 4
    assert [g["modalities"]["motor"]["error"] for g in got] == pytest.approx(
        [e["modalities"]["motor"]["error"] for e in expected])


def test_a_new_version_is_trained_from_stored_readings_and_waits_for_activation(stack: Stack, tmp_path) -> None:
    """``serve-ml bundle train``'s core on the real database: the readings stored for a
    power class in a range train a new version of the live bundle's shape; readings
    inside an anomaly alert are not trained on; the live version is pinned first."""
    import json

    from serve_ml.bundles.batch import Reading
    from serve_ml.bundles.builder import BuildSpec, build_bundle
    from serve_ml.bundles.catalog import Catalog
    from serve_ml.bundles.thresholds import QuantileFactor
    from serve_ml.pipelines.encode import Origin, encode_scored
    from serve_ml.scoring.training import TrainRequest, pin_in_database, train_from_store
    from tests.conftest import MODS
    from tests.samples import sim_rows

    eq = "train-int-01"
    # Short stretches of many machines' readings, for the live bundle and the stream
    # alike: the simulator's air temperature is a random walk, which over hundreds of
    # readings wanders where a gate trained on another stretch never saw it.
    def stretches(first_seed: int, k: int) -> list[dict[str, float]]:
        return [r for s in range(k) for r in sim_rows("normal", 50, seed=first_seed + s)]

    history = stretches(200, 30)
    cols = {f: np.array([r[f] for r in history]) for f in history[0]}
    # a gate that never fires (its threshold far above any error): the alert is set by hand below
    spec = BuildSpec(equipment_id=eq, power="7.5kW", model_version="1.0.0", power_range_kw=(0.0, 100.0),
                     modalities=MODS, classifier=False, epochs=5,
                     threshold_rule=QuantileFactor(q=0.99, factor=100.0))
    build_bundle(spec, cols, np.full(len(history), "none"), tmp_path, data="sim", progress=lambda _m: None)
    cat = Catalog.scan(tmp_path)
    rows = stretches(100, 10)
    rows += sim_rows("overstrain", 30, seed=13) + sim_rows("normal", 30, seed=14)
    base = now() + dt.timedelta(hours=9)
    readings = [Reading(eq, r, "7.5kW") for r in rows]
    origins = [Origin(base + dt.timedelta(seconds=k), r, "kafka", 0, k) for k, r in enumerate(rows)]
    encoded, rejected = encode_scored(cat, readings, origins, enable_xgb=False)
    assert not rejected

    stats = write_rows(stack, encoded, resolve_after=10)
    assert not stats.alerts_opened
    q(stack, "INSERT INTO serve_ml_alerts (equipment_id, power, model_version, status, severity, opened_at, "
             "last_seen_at, resolved_at, peak_score, anomalies) VALUES ($1, '7.5kW', '1.0.0', 'resolved', 'major', "
             "$2, $3, $3, 2.0, 30)", eq, origins[500].ts, origins[529].ts)  # the overstrain stretch
    pinned: list[str] = []

    def keep_live(version: str) -> str:
        asyncio.run(pin_in_database(stack.database_url, eq, "7.5kW", version, "test"))
        pinned.append(version)
        return f"pinned {version}"

    req = TrainRequest(equipment_id=eq, power="7.5kW", start=base, end=base + dt.timedelta(hours=1), epochs=3)
    result = train_from_store(req, stack.database_url, tmp_path, lambda _m: None, keep_live)
    assert pinned == ["1.0.0"] and result["model_version"] == "1.1.0" and result["live"] is False
    assert result["rows"] == len(rows) and result["normal_rows"] == len(rows) - 30
    manifest = json.loads((tmp_path / eq / "7.5kW" / "1.1.0" / "manifest.json").read_text())
    old = json.loads((tmp_path / eq / "7.5kW" / "1.0.0" / "manifest.json").read_text())
    assert {n: m["features"] for n, m in manifest["modalities"].items()} == {
        n: m["features"] for n, m in old["modalities"].items()}
    assert manifest["provenance"]["metrics"]["split"].startswith("time") and manifest["classifier"] is None
    override = q(stack, "SELECT model_version, pinned FROM serve_ml_live_overrides WHERE equipment_id = $1", eq)
    assert [(o["model_version"], o["pinned"]) for o in override] == [("1.0.0", True)]
    with pytest.raises(Exception, match="at least 200 are needed"):
        train_from_store(req.model_copy(update={"end": base + dt.timedelta(seconds=100)}), stack.database_url,
                         tmp_path, lambda _m: None, keep_live)
