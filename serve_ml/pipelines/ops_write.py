"""What a stored batch changes besides alarms, in the same transaction: each
equipment's live status (from its latest reading) and the hourly rollups (from the
rows the batch really inserted, so a replay never counts twice).

Both are one statement per batch over arrays, sorted by key so that two scorers
updating the same rows lock them in the same order."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Any

import asyncpg
import numpy as np
import orjson

from serve_ml.bundles.scoring import FAULT_NAMES
from serve_ml.operations.thresholds import LEVEL_NAMES, ThresholdBook
from serve_ml.pipelines.alarms import severity
from serve_ml.pipelines.live import CHANNEL, verdict_message
from serve_ml.pipelines.pgcopy import PG_EPOCH
from serve_ml.pipelines.verdicts import Judged

_HOUR_US = 3_600_000_000
_RANK = {"normal": 0, "warning": 1, "critical": 2}
STATUS_SKEW_S = 60
_NEWER = f"excluded.last_reading_at >= least(s.last_reading_at, now() - interval '{STATUS_SKEW_S} seconds')"


def latest_status(groups: Sequence[Judged], book: ThresholdBook) -> tuple[dt.datetime, str, list[dict[str, Any]]]:
    """One equipment's status from its latest row in ``groups``, and why."""
    k, i = max(((k, int(np.argmax(g.time_us))) for k, g in enumerate(groups) if len(g)),
               key=lambda ki: groups[ki[0]].time_us[ki[1]])
    g = groups[k]
    reasons: list[dict[str, Any]] = []
    if g.inputs is not None:
        for sensor, applied in book.applied(g.equipment_id).items():
            col = g.inputs.get(sensor)
            if col is None or np.ndim(col) != 1:
                continue
            lvl = applied.limits.level(float(col[i]))
            if lvl:
                reasons.append({"type": "threshold", "level": LEVEL_NAMES[lvl], "sensor": sensor,
                                "value": float(col[i]), "limits": applied.limits.model_dump(exclude_none=True)})
    for sensor, codes in (g.faults or {}).items():
        if codes[i]:
            reasons.append({"type": "sensor_fault", "level": "warning", "sensor": sensor,
                            "fault": FAULT_NAMES.get(int(codes[i]), "unknown")})
    if g.anomaly[i]:
        score = float(g.score[i])
        reasons.append({"type": "anomaly", "level": "critical" if severity(score) == "critical" else "warning",
                        "score": score, "modalities": [m for m, f in g.flags if f[i]],
                        "fault_label": g.labels[i]})
    if g.rul is not None and g.rul_alert_below is not None and g.rul[i] < g.rul_alert_below:
        rul = float(g.rul[i])
        reasons.append({"type": "rul", "level": "critical" if rul * 3 <= g.rul_alert_below else "warning",
                        "rul": rul, "alert_below": g.rul_alert_below})
    status = max((r["level"] for r in reasons), key=_RANK.__getitem__, default="normal")
    reasons.sort(key=lambda r: -_RANK[r["level"]])
    return g.times[i], status, reasons


async def write_status(conn: asyncpg.Connection, judged: Sequence[Judged], book: ThresholdBook, *,
                       live: Collection[str] | None = None) -> None:
    """Each equipment's live status from its latest row, and one live message per
    equipment in ``live`` (None: all) for the WebSocket clients (``pipelines.live``),
    sent on commit."""
    by_eq: dict[str, list[Judged]] = defaultdict(list)
    for g in judged:
        if len(g):
            by_eq[g.equipment_id].append(g)
    if not by_eq:
        return
    eqs = sorted(by_eq)
    rows = [latest_status(by_eq[eq], book) for eq in eqs]
    # A late reading (older than the stored one: a replay, a backfill) refreshes "data
    # arrived" only. A stored reading stamped ahead of the clock (producers may be up to
    # SERVE_ML_MAX_READING_FUTURE_S ahead) must not freeze the status: any reading of
    # the last STATUS_SKEW_S beats it.
    await conn.execute(
        "INSERT INTO serve_ml_status AS s (equipment_id, last_reading_at, status, reasons) "
        "SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::jsonb[]) "
        "ON CONFLICT (equipment_id) DO UPDATE SET updated_at = now(), "
        f"status = CASE WHEN {_NEWER} THEN excluded.status ELSE s.status END, "
        f"reasons = CASE WHEN {_NEWER} THEN excluded.reasons ELSE s.reasons END, "
        "last_reading_at = greatest(s.last_reading_at, excluded.last_reading_at)",
        eqs, [r[0] for r in rows], [r[1] for r in rows], [orjson.dumps(r[2]).decode() for r in rows])
    messages = [verdict_message(by_eq[eq], r[1], r[2]) for eq, r in zip(eqs, rows, strict=True)
                if live is None or eq in live]
    if messages:
        await conn.execute("SELECT pg_notify($1, m) FROM unnest($2::text[]) AS m", CHANNEL, messages)


async def write_rollups(conn: asyncpg.Connection, judged: Sequence[Judged]) -> None:
    """Add the rows of ``judged`` to the hourly rollups."""
    sensors: dict[tuple[str, int, str], list[float]] = {}
    verdicts: dict[tuple[str, int], list[int]] = {}
    for g in judged:
        if not len(g):
            continue
        hours = g.time_us // _HOUR_US
        if hours[0] == hours[-1] and (hours == hours[0]).all():
            parts = [(int(hours[0]), slice(None))]
        else:
            parts = [(int(h), hours == h) for h in np.unique(hours)]
        for h, sel in parts:
            an = g.anomaly[sel]
            v = verdicts.setdefault((g.equipment_id, h), [0, 0])
            v[0] += len(an)
            v[1] += int(np.count_nonzero(an))
            for name, col in (g.inputs or {}).items():
                if np.ndim(col) != 1:
                    continue
                c = np.asarray(col[sel], dtype=np.float64)
                s = sensors.get((g.equipment_id, h, name))
                if s is None:
                    sensors[(g.equipment_id, h, name)] = [float(c.min()), float(c.max()), float(c.sum()), len(c)]
                else:
                    s[0], s[1] = min(s[0], float(c.min())), max(s[1], float(c.max()))
                    s[2] += float(c.sum())
                    s[3] += len(c)
    if verdicts:
        keys = sorted(verdicts)
        await conn.execute(
            "INSERT INTO serve_ml_rollup_verdicts_1h AS r SELECT * FROM unnest($1::text[], $2::timestamptz[], "
            "$3::bigint[], $4::bigint[]) ON CONFLICT (equipment_id, bucket) DO UPDATE SET "
            "readings = r.readings + excluded.readings, anomalies = r.anomalies + excluded.anomalies",
            [k[0] for k in keys], [_hour(k[1]) for k in keys], [verdicts[k][0] for k in keys],
            [verdicts[k][1] for k in keys])
    if sensors:
        keys3 = sorted(sensors)
        vals = [sensors[k] for k in keys3]
        await conn.execute(
            "INSERT INTO serve_ml_rollup_sensors_1h AS r SELECT * FROM unnest($1::text[], $2::timestamptz[], "
            "$3::text[], $4::float8[], $5::float8[], $6::float8[], $7::bigint[]) "
            "ON CONFLICT (equipment_id, bucket, sensor) DO UPDATE SET min = least(r.min, excluded.min), "
            "max = greatest(r.max, excluded.max), sum = r.sum + excluded.sum, count = r.count + excluded.count",
            [k[0] for k in keys3], [_hour(k[1]) for k in keys3], [k[2] for k in keys3], [v[0] for v in vals],
            [v[1] for v in vals], [v[2] for v in vals], [v[3] for v in vals])


def _hour(h: int) -> dt.datetime:
    return PG_EPOCH + dt.timedelta(microseconds=h * _HOUR_US)
