"""Versioned schema migrations, applied at start-up and by ``serve-ml db migrate``.

Time-series tables are TimescaleDB hypertables when the ``timescaledb`` extension
is available, and natively range-partitioned PostgreSQL tables (daily partitions,
created ahead of the data by :class:`Partitions`) when it is not. Both paths run the
same column definitions; :func:`migrate` returns which one is active.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

import asyncpg

from serve_ml.operations.ddl import (
    ALARM_RULES_DDL,
    AUDIT_DDL,
    MAINTENANCE_DDL,
    NOTIFICATIONS_DDL,
    OPERATIONS_DDL,
    VALID_RANGE_DDL,
)
from serve_ml.operations.live_follows import LIVE_FOLLOWS_DDL

log = logging.getLogger("serve_ml.schema")
TIMESCALE = "timescaledb"
PARTITIONED = "postgres-partitioned"
TIME_TABLES = ("serve_ml_readings", "serve_ml_predictions")
_LOCK_KEY = 0x5E12E_11  # advisory lock: one migrator at a time
ENSURE_LOCK_TIMEOUT_S = 30.0

_READINGS = """
CREATE TABLE serve_ml_readings (
    time            timestamptz NOT NULL,
    equipment_id    text        NOT NULL,
    power           text,
    features        jsonb       NOT NULL,
    source          text        NOT NULL,
    source_partition integer,
    source_offset   bigint,
    PRIMARY KEY (equipment_id, time)
)"""
_PREDICTIONS = """
CREATE TABLE serve_ml_predictions (
    time            timestamptz NOT NULL,
    equipment_id    text        NOT NULL,
    power           text        NOT NULL,
    model_version   text        NOT NULL,
    anomaly         boolean     NOT NULL,
    score           double precision NOT NULL,
    modalities      jsonb       NOT NULL,
    fault_label     text,
    fault_probabilities jsonb,
    source          text        NOT NULL,
    source_partition integer,
    source_offset   bigint,
    scored_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (equipment_id, time)
)"""
_REST = """
CREATE TABLE serve_ml_models (
    equipment_id  text NOT NULL,
    power         text NOT NULL,
    model_version text NOT NULL,
    sha256        text NOT NULL,
    status        text NOT NULL,
    reason        text,
    loaded_at     timestamptz,
    activated_at  timestamptz,
    pinned        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (equipment_id, power, model_version)
);
CREATE TABLE serve_ml_model_events (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    equipment_id  text NOT NULL,
    power         text NOT NULL,
    model_version text,
    event         text NOT NULL,
    reason        text
);
CREATE TABLE serve_ml_alerts (
    id            bigserial PRIMARY KEY,
    equipment_id  text NOT NULL,
    power         text,
    model_version text,
    status        text NOT NULL CHECK (status IN ('open', 'resolved')),
    severity      text NOT NULL,
    opened_at     timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    resolved_at   timestamptz,
    peak_score    double precision NOT NULL,
    anomalies     integer NOT NULL,
    normal_streak integer NOT NULL DEFAULT 0,
    fault_label   text,
    modalities    text[] NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX serve_ml_alerts_one_open ON serve_ml_alerts (equipment_id) WHERE status = 'open';
CREATE INDEX serve_ml_alerts_by_equipment ON serve_ml_alerts (equipment_id, opened_at DESC);
CREATE TABLE serve_ml_outbox (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL,
    key         text,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
CREATE INDEX serve_ml_outbox_unsent ON serve_ml_outbox (id) WHERE sent_at IS NULL;
CREATE TABLE serve_ml_meta (key text PRIMARY KEY, value text NOT NULL);
"""


async def _v1(conn: asyncpg.Connection, mode: str) -> None:
    if mode == TIMESCALE:
        await conn.execute(_READINGS + ";" + _PREDICTIONS + ";")
        for t in TIME_TABLES:
            await conn.execute(f"SELECT create_hypertable('{t}', 'time', chunk_time_interval => interval '1 day')")
            # the retention policy is kept by pipelines.retention, in step with the setting
    else:
        await conn.execute(_READINGS + " PARTITION BY RANGE (time);" + _PREDICTIONS + " PARTITION BY RANGE (time);")
    # The primary keys (equipment_id, time) serve "latest per equipment" (backward
    # index scan) and "time range per equipment"; this one serves fleet-wide ranges
    # (replaced by a BRIN index in migration 4).
    await conn.execute("CREATE INDEX serve_ml_predictions_time ON serve_ml_predictions (time DESC)")
    await conn.execute(_REST)


async def _v2(conn: asyncpg.Connection, mode: str) -> None:
    await conn.execute("""
    CREATE TABLE serve_ml_live_overrides (
        equipment_id  text NOT NULL,
        power         text NOT NULL,
        model_version text NOT NULL,
        pinned        boolean NOT NULL,
        newest_at_set text,
        set_at        timestamptz NOT NULL DEFAULT now(),
        reason        text,
        PRIMARY KEY (equipment_id, power)
    );
    ALTER TABLE serve_ml_model_events ADD COLUMN from_version text;
    """)


async def _v3(conn: asyncpg.Connection, mode: str) -> None:
    # The per-row documents are written at stream rate and read back whole, never
    # queried inside: ``json`` stores the text as sent, where ``jsonb`` parses and
    # re-encodes every document on insert. Measured on the embedded PostgreSQL:
    # 11.8 -> 7.7 µs of write time per reading. Rewrites the tables (an exclusive
    # lock for as long as that takes on a large existing database).
    await conn.execute("""
    ALTER TABLE serve_ml_readings ALTER COLUMN features TYPE json USING features::json;
    ALTER TABLE serve_ml_predictions ALTER COLUMN modalities TYPE json USING modalities::json,
        ALTER COLUMN fault_probabilities TYPE json USING fault_probabilities::json;
    """)


async def _v4(conn: asyncpg.Connection, mode: str) -> None:
    # Fleet-wide time ranges over predictions. A btree on time cost ~0.8 µs of
    # PostgreSQL CPU per stored reading (measured: 5.2-5.5 -> 4.3-4.8 µs for the two
    # COPYs); rows arrive in time order, so a BRIN index (a few pages per partition)
    # answers the same range queries for almost nothing. TimescaleDB's hypertable
    # already carries its own (time DESC) index per chunk, so ours was a duplicate there.
    await conn.execute("DROP INDEX IF EXISTS serve_ml_predictions_time")
    if mode != TIMESCALE:
        await conn.execute("CREATE INDEX serve_ml_predictions_time ON serve_ml_predictions USING brin (time)")


async def _v5(conn: asyncpg.Connection, mode: str) -> None:
    # Two readings stamped with the same time are two readings: the key gains what
    # tells them apart (pipelines.encode.reading_key). Rows stored before keep key 0,
    # so a replay of one of them is stored a second time under its real key, once.
    for t in TIME_TABLES:
        await conn.execute(f"ALTER TABLE {t} ADD COLUMN reading_key bigint NOT NULL DEFAULT 0; "
                           f"ALTER TABLE {t} DROP CONSTRAINT {t}_pkey; "
                           f"ALTER TABLE {t} ADD PRIMARY KEY (equipment_id, time, reading_key)")


async def _v6(conn: asyncpg.Connection, mode: str) -> None:
    # Bundles with a remaining-useful-life head: the prediction and its interval per
    # reading, and alerts of a second kind (RUL below the bundle's alert_below), each
    # kind with at most one open alert per equipment.
    await conn.execute("""
    ALTER TABLE serve_ml_predictions ADD COLUMN rul double precision, ADD COLUMN rul_lower double precision,
        ADD COLUMN rul_upper double precision;
    ALTER TABLE serve_ml_alerts ADD COLUMN kind text NOT NULL DEFAULT 'anomaly' CHECK (kind IN ('anomaly', 'rul'));
    DROP INDEX serve_ml_alerts_one_open;
    CREATE UNIQUE INDEX serve_ml_alerts_one_open ON serve_ml_alerts (equipment_id, kind) WHERE status = 'open';
    """)


async def _v7(conn: asyncpg.Connection, mode: str) -> None:
    await conn.execute(OPERATIONS_DDL)


async def _v8(conn: asyncpg.Connection, mode: str) -> None:
    await conn.execute(NOTIFICATIONS_DDL)


async def _v9(conn: asyncpg.Connection, mode: str) -> None:
    await conn.execute(VALID_RANGE_DDL)


async def _v10(conn: asyncpg.Connection, mode: str) -> None:
    await conn.execute(MAINTENANCE_DDL)


async def _v11(conn: asyncpg.Connection, mode: str) -> None:
    await conn.execute(ALARM_RULES_DDL)


async def _v12(conn: asyncpg.Connection, mode: str) -> None:
    await conn.execute(AUDIT_DDL)


async def _v13(conn: asyncpg.Connection, mode: str) -> None:
    await conn.execute(LIVE_FOLLOWS_DDL)


MIGRATIONS = [(1, "initial schema", _v1), (2, "explicit live versions", _v2),
              (3, "per-row documents as json", _v3), (4, "BRIN time index on predictions", _v4),
              (5, "readings keyed by what tells them apart", _v5), (6, "remaining useful life", _v6),
              (7, "operations: equipment, thresholds, status, alarm lifecycle, rollups", _v7),
              (8, "notification deliveries", _v8), (9, "sensors' physical ranges", _v9),
              (10, "maintenance windows", _v10), (11, "alarm rules", _v11),
              (12, "audit trail of management and operator actions", _v12),
              (13, "equipment followed live", _v13)]


async def detect_mode(conn: asyncpg.Connection) -> str:
    has = await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = $1", TIMESCALE)
    return TIMESCALE if has else PARTITIONED


async def migrate(conn: asyncpg.Connection) -> str:
    """Apply pending migrations; return the storage mode in force."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute("""CREATE TABLE IF NOT EXISTS serve_ml_schema_migrations (
            version integer PRIMARY KEY, name text NOT NULL, mode text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now())""")
        applied = {r["version"]: r["mode"] for r in await conn.fetch(
            "SELECT version, mode FROM serve_ml_schema_migrations")}
        mode = applied.get(1) or await detect_mode(conn)
        if mode == TIMESCALE:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        for version, name, step in MIGRATIONS:
            if version in applied:
                continue
            await step(conn, mode)
            await conn.execute("INSERT INTO serve_ml_schema_migrations (version, name, mode) VALUES ($1, $2, $3)",
                               version, name, mode)
            log.info("applied migration %s (%s) in mode %s", version, name, mode)
    log.info("storage mode: %s", mode)
    return mode


class Partitions:
    """Creates daily partitions ahead of the data (plain-PostgreSQL mode only).

    Every stored time lies in the decoder's window (``pipelines.decode.window``), so
    one batch creates at most one partition per table for each day of that window
    (367 with the defaults), never one per day a producer can name."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.known: set[dt.date] = set()

    def missing(self, times: Iterable[dt.datetime]) -> set[dt.date]:
        """The days of ``times`` whose partitions this writer has not made sure of."""
        if self.mode != PARTITIONED:
            return set()
        return {t.astimezone(dt.UTC).date() for t in times} - self.known

    async def ensure(self, conn: asyncpg.Connection, times: Iterable[dt.datetime],
                     lock_timeout_s: float = ENSURE_LOCK_TIMEOUT_S) -> None:
        """Create the missing partitions. Creating one locks its parent table, so it
        waits for every open transaction that wrote to it; a writer must not call
        this while a transaction of its own that waits on this one is open (the
        stream scorer creates them with no write in flight). ``lock_timeout_s`` turns
        any such wait that slipped through into an error instead of a hang."""
        days = self.missing(times)
        if not days:
            return
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY + 1)
            for day in sorted(days):
                # The last day datetime can hold has no next day: its partition is open-ended.
                upper = "MAXVALUE" if day == dt.date.max else f"('{day + dt.timedelta(days=1)} 00:00+00')"
                for t in TIME_TABLES:
                    await conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {t}_p{day:%Y%m%d} PARTITION OF {t} "
                        f"FOR VALUES FROM ('{day.isoformat()} 00:00+00') TO {upper}")
        self.known |= days

    def forget(self, days: Iterable[dt.date] | None = None) -> None:
        """Forget ``days`` (all, when None): their partitions were dropped (retention)
        and must be created again before anything is written there."""
        if days is None:
            self.known.clear()
        else:
            self.known -= set(days)
