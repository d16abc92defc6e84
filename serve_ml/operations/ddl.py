"""The operations tables (schema migration 7). Plain PostgreSQL: the same in both
storage modes (see ``pipelines.schema``).

Rollups are tables the stream writer maintains in the transaction that stores
the readings, not TimescaleDB continuous aggregates, in both modes: a continuous
aggregate over the readings would have to unpack every reading's JSON features on
each refresh and lags by its refresh policy, while the writer already holds each
batch's values as columns and knows which rows the batch really inserted, so a
replayed batch is never counted twice.
"""

from __future__ import annotations

OPERATIONS_DDL = """
CREATE TABLE serve_ml_equipment (
    equipment_id text PRIMARY KEY,
    name         text,
    type         text,
    power        text,
    location     text[] NOT NULL DEFAULT '{}',
    metadata     jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX serve_ml_equipment_location ON serve_ml_equipment USING gin (location);

CREATE TABLE serve_ml_thresholds (
    scope        text NOT NULL CHECK (scope IN ('equipment', 'type', 'location')),
    target       text NOT NULL,
    sensor       text NOT NULL,
    warning_min  double precision,
    warning_max  double precision,
    critical_min double precision,
    critical_max double precision,
    version      integer NOT NULL,
    set_by       text NOT NULL,
    set_at       timestamptz NOT NULL DEFAULT now(),
    reason       text NOT NULL,
    PRIMARY KEY (scope, target, sensor)
);
CREATE TABLE serve_ml_threshold_history (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    scope     text NOT NULL,
    target    text NOT NULL,
    sensor    text NOT NULL,
    action    text NOT NULL CHECK (action IN ('set', 'delete')),
    version   integer NOT NULL,
    previous  jsonb,
    current   jsonb,
    actor     text NOT NULL,
    reason    text NOT NULL
);
CREATE INDEX serve_ml_threshold_history_target ON serve_ml_threshold_history (scope, target, sensor, id DESC);

CREATE TABLE serve_ml_status (
    equipment_id    text PRIMARY KEY,
    status          text NOT NULL CHECK (status IN ('normal', 'warning', 'critical')),
    reasons         jsonb NOT NULL DEFAULT '[]',
    last_reading_at timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE serve_ml_alerts DROP CONSTRAINT IF EXISTS serve_ml_alerts_kind_check;
ALTER TABLE serve_ml_alerts
    ADD CONSTRAINT serve_ml_alerts_kind_check
        CHECK (kind IN ('anomaly', 'rul', 'threshold', 'sensor_fault', 'pipeline_fault')),
    ADD COLUMN source     text NOT NULL DEFAULT '',
    ADD COLUMN acked_at   timestamptz,
    ADD COLUMN acked_by   text,
    ADD COLUMN cleared_by text,
    ADD COLUMN detail     jsonb;
DROP INDEX serve_ml_alerts_one_open;
CREATE UNIQUE INDEX serve_ml_alerts_one_open ON serve_ml_alerts (equipment_id, kind, source) WHERE status = 'open';
CREATE INDEX serve_ml_alerts_open_by_severity ON serve_ml_alerts (severity, opened_at DESC) WHERE status = 'open';

CREATE TABLE serve_ml_alarm_events (
    id        bigserial PRIMARY KEY,
    alarm_id  bigint NOT NULL REFERENCES serve_ml_alerts (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL,
    event     text NOT NULL,
    actor     text,
    comment   text,
    severity  text,
    detail    jsonb
);
CREATE INDEX serve_ml_alarm_events_alarm ON serve_ml_alarm_events (alarm_id, id);

CREATE TABLE serve_ml_rollup_sensors_1h (
    equipment_id text NOT NULL,
    bucket       timestamptz NOT NULL,
    sensor       text NOT NULL,
    min          double precision NOT NULL,
    max          double precision NOT NULL,
    sum          double precision NOT NULL,
    count        bigint NOT NULL,
    PRIMARY KEY (equipment_id, bucket, sensor)
);
CREATE TABLE serve_ml_rollup_verdicts_1h (
    equipment_id text NOT NULL,
    bucket       timestamptz NOT NULL,
    readings     bigint NOT NULL,
    anomalies    bigint NOT NULL,
    PRIMARY KEY (equipment_id, bucket)
);
"""

# Notification deliveries: one row per (outbox event, sink) the routing rules chose,
# with a copy of the event (retention may delete the outbox row first) and every
# attempt. Outbox rows gain ``routed_at``; rows already there are not notified.
NOTIFICATIONS_DDL = """
ALTER TABLE serve_ml_outbox ADD COLUMN routed_at timestamptz;
UPDATE serve_ml_outbox SET routed_at = now();
CREATE INDEX serve_ml_outbox_unrouted ON serve_ml_outbox (id) WHERE routed_at IS NULL;

CREATE TABLE serve_ml_deliveries (
    id           bigserial PRIMARY KEY,
    outbox_id    bigint NOT NULL,
    sink         text NOT NULL,
    payload      jsonb NOT NULL,
    status       text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    next_at      timestamptz NOT NULL DEFAULT now(),
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    UNIQUE (outbox_id, sink)
);
CREATE INDEX serve_ml_deliveries_due ON serve_ml_deliveries (next_at) WHERE status = 'pending';
CREATE TABLE serve_ml_delivery_attempts (
    id          bigserial PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES serve_ml_deliveries (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    ok          boolean NOT NULL,
    error       text,
    duration_ms double precision NOT NULL
);
CREATE INDEX serve_ml_delivery_attempts_delivery ON serve_ml_delivery_attempts (delivery_id, id);
"""

# A sensor's physical range, beside its warning/critical levels: outside it the
# value is a sensor fault, not a measurement.
VALID_RANGE_DDL = """
ALTER TABLE serve_ml_thresholds ADD COLUMN valid_min double precision, ADD COLUMN valid_max double precision;
"""

# Maintenance windows, and the alarms they suppressed.
MAINTENANCE_DDL = """
CREATE TABLE serve_ml_maintenance (
    id         bigserial PRIMARY KEY,
    scope      text NOT NULL CHECK (scope IN ('equipment', 'location')),
    target     text NOT NULL,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL CHECK (ends_at >= starts_at),
    reason     text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    ended_by   text
);
CREATE INDEX serve_ml_maintenance_ends ON serve_ml_maintenance (ends_at);
ALTER TABLE serve_ml_alerts ADD COLUMN suppressed_by bigint REFERENCES serve_ml_maintenance (id);
"""

# Alarm rules per scope and alarm type, their history, and the flags an unraised
# N-of-M or minimum-duration condition carries from batch to batch.
ALARM_RULES_DDL = """
CREATE TABLE serve_ml_alarm_rules (
    scope   text NOT NULL CHECK (scope IN ('equipment', 'type', 'location')),
    target  text NOT NULL,
    kind    text NOT NULL CHECK (kind IN ('anomaly', 'rul', 'threshold', 'sensor_fault', '*')),
    rule    jsonb NOT NULL,
    version integer NOT NULL,
    set_by  text NOT NULL,
    set_at  timestamptz NOT NULL DEFAULT now(),
    reason  text NOT NULL,
    PRIMARY KEY (scope, target, kind)
);
CREATE TABLE serve_ml_alarm_rule_history (
    id       bigserial PRIMARY KEY,
    scope    text NOT NULL,
    target   text NOT NULL,
    kind     text NOT NULL,
    action   text NOT NULL CHECK (action IN ('set', 'delete')),
    version  integer NOT NULL,
    previous jsonb,
    current  jsonb,
    actor    text NOT NULL,
    reason   text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE serve_ml_alarm_pending (
    equipment_id text NOT NULL,
    kind         text NOT NULL,
    source       text NOT NULL,
    recent       bigint NOT NULL,
    since_us     bigint,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (equipment_id, kind, source)
);
"""

# Who asked for which management or operator action, when, from where, and how it ended.
AUDIT_DDL = """
CREATE TABLE serve_ml_audit (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL,
    subject text NOT NULL,
    role    text NOT NULL,
    method  text NOT NULL,
    route   text NOT NULL,
    path    text NOT NULL,
    status  integer NOT NULL,
    client  text NOT NULL
);
CREATE INDEX serve_ml_audit_at ON serve_ml_audit (at DESC);
"""
