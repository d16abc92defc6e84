"""The stream's side of the alarm lifecycle: open, update, escalate and clear
alarms from a stored batch's verdicts, inside the batch's transaction.

Each alarm type reads a view of the batch's rows, flagged or not, with a score:
``anomaly`` the gate's verdicts, ``rul`` RUL below the head's alert level,
``threshold`` one sensor's raw value beyond its limits, ``sensor_fault`` one
sensor's faults from the data-quality gate (one view per sensor for both). At
most one alarm is active per (equipment, type, source); repeats update it. It
clears after ``resolve_after`` normal rows in a row (hysteresis). Every transition
is a timeline row and an outbox event (``operations.alarm_store.TransitionLog``,
written once per batch). An alarm that opens inside a maintenance window
(``ThresholdBook.maintenance``) is recorded but suppressed: not published.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
import numpy as np
import orjson

from serve_ml.bundles.scoring import FAULT_FLATLINE, FAULT_NAMES, FAULT_OUT_OF_RANGE
from serve_ml.operations.alarm_rules import DEFAULT_RULE, AlarmRule, Pending, limit_hold, raise_at, score_hold
from serve_ml.operations.alarm_store import TransitionLog
from serve_ml.operations.thresholds import LEVEL_NAMES, ThresholdBook
from serve_ml.pipelines.verdicts import Judged, Timeline


def severity(peak_score: float) -> str:
    """An anomaly score (error over threshold) or a RUL ratio as a severity."""
    return "critical" if peak_score >= 3 else "major" if peak_score >= 1.5 else "minor"


def level_severity(level: float) -> str:
    """A threshold level (1 warning, 2 critical) as a severity."""
    return "critical" if level >= 2 else "warning"


# What the alarm logic and the transition log read back of a row it wrote.
_BACK = "id, equipment_id, kind, source, status, severity, acked_at, suppressed_by, peak_score, normal_streak"


@dataclass(frozen=True)
class AlarmType:
    name: str
    severity: Callable[[float], str]
    follows: bool = False
    """Severity follows the latest flagged row (escalates and de-escalates while
    active) rather than the peak so far."""


ANOMALY = AlarmType("anomaly", severity)
RUL = AlarmType("rul", severity)
THRESHOLD = AlarmType("threshold", level_severity, follows=True)


def fault_severity(code: float) -> str:
    """A sensor fault's code (``bundles.scoring.FAULT_*``) as a severity."""
    return "major" if code >= FAULT_OUT_OF_RANGE else "minor" if code >= FAULT_FLATLINE else "warning"


SENSOR_FAULT = AlarmType("sensor_fault", fault_severity, follows=True)


@dataclass
class Transitions:
    opened: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)


def threshold_views(judged: Sequence[Judged], book: ThresholdBook) -> list[tuple[str, Judged]]:
    """Per group and sensor with limits: the rows judged by that sensor's raw value
    (flagged beyond a limit; score 1 warning, 2 critical)."""
    out = []
    for j in judged:
        if j.inputs is None or not len(j):
            continue
        for sensor, lv in book.judge(j.equipment_id, j.inputs).items():
            out.append((sensor, Judged(j.equipment_id, j.power, j.model_version, j.times, j.time_us, lv > 0,
                                       lv.astype(np.float64), [None] * len(j), [], j.keys,
                                       values=np.asarray(j.inputs[sensor], dtype=np.float64))))
    return out


def fault_views(judged: Sequence[Judged], active: Collection[tuple[str, str]] = ()) -> list[tuple[str, Judged]]:
    """Per group and faulted sensor: the rows judged by that sensor's fault code; and
    for each (equipment, sensor) of ``active`` (an open sensor-fault alarm) not
    faulted in a group, that group's rows as normal, so the alarm can clear."""
    out = []
    for j in judged:
        faults = j.faults or {}
        sensors = set(faults) | {s for eq, s in active if eq == j.equipment_id}
        for sensor in sorted(sensors):
            codes = faults.get(sensor)
            if codes is None:
                codes = np.zeros(len(j), dtype=np.int8)
            values = None if j.inputs is None or sensor not in j.inputs else np.asarray(j.inputs[sensor], np.float64)
            out.append((sensor, Judged(j.equipment_id, j.power, j.model_version, j.times, j.time_us, codes > 0,
                                       codes.astype(np.float64), [None] * len(j), [], j.keys, values=values)))
    return out


async def active_faults(conn: asyncpg.Connection, judged: Sequence[Judged]) -> set[tuple[str, str]]:
    """(equipment, sensor) of every open sensor-fault alarm of the batch's equipment."""
    eqs = list({j.equipment_id for j in judged})
    return {(r["equipment_id"], r["source"]) for r in await conn.fetch(
        "SELECT equipment_id, source FROM serve_ml_alerts WHERE status = 'open' AND kind = 'sensor_fault' "
        "AND equipment_id = ANY($1::text[])", eqs)}


async def apply(conn: asyncpg.Connection, views: Sequence[tuple[str, Judged]], kind: AlarmType, log: TransitionLog,
                resolve_after: int, done: Transitions, book: ThresholdBook | None = None) -> None:
    """Open, update and clear ``kind`` alarms from ``views`` ((source, rows) pairs),
    by the alarm rule that applies to each equipment (``operations.alarm_rules``)."""
    by_key: dict[tuple[str, str], list[Judged]] = defaultdict(list)
    for source, group in views:
        if len(group):
            by_key[(group.equipment_id, source)].append(group)
    if not by_key:
        return
    eqs = list({eq for eq, _ in by_key})
    rules = {eq: book.alarm_rule(eq, kind.name).rule if book is not None else DEFAULT_RULE for eq in eqs}
    open_rows = {(r["equipment_id"], r["source"]): r for r in await conn.fetch(
        "SELECT * FROM serve_ml_alerts WHERE status = 'open' AND kind = $2 AND equipment_id = ANY($1::text[]) "
        "ORDER BY id FOR UPDATE", eqs, kind.name)}
    waiting = [k for k in by_key if k not in open_rows and not rules[k[0]].immediate]
    pending = await _pending(conn, kind.name, waiting) if waiting else {}
    carry: dict[tuple[str, str], Pending] = {}
    for (eq, source), groups in by_key.items():
        rule = rules[eq]
        if rule.clear_margin_pct:
            groups = [_with_hold(g, source, kind, rule, book) for g in groups]
        await _one(conn, eq, source, Timeline(groups), open_rows.get((eq, source)), kind, log,
                   _Rule(rule, rule.clear_after or resolve_after, pending.get((eq, source))), done, book, carry)
    if carry:
        await _save_pending(conn, kind.name, carry)


@dataclass(frozen=True, slots=True)
class _Rule:
    rule: AlarmRule
    clear_after: int
    pending: Pending | None  # the carried state of an unraised condition (None: none loaded)


def _with_hold(g: Judged, source: str, kind: AlarmType, rule: AlarmRule, book: ThresholdBook | None) -> Judged:
    """``g`` with the rows a clear margin holds (neither flagged nor back to normal)."""
    if kind.name == "threshold" and book is not None and g.values is not None:
        applied = book.applied(g.equipment_id).get(source)
        hold = None if applied is None else limit_hold(applied.limits.raise_bounds(), g.values, g.anomaly, rule)
    elif kind.name in ("anomaly", "rul"):
        hold = score_hold(g.anomaly, g.score, rule)
    else:
        hold = None
    return g if hold is None else replace(g, hold=hold)


async def _pending(conn: asyncpg.Connection, kind: str, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str],
                                                                                                 Pending]:
    return {(r["equipment_id"], r["source"]): Pending(r["recent"], r["since_us"]) for r in await conn.fetch(
        "SELECT p.equipment_id, p.source, p.recent, p.since_us FROM serve_ml_alarm_pending p "
        "JOIN unnest($2::text[], $3::text[]) AS k (equipment_id, source) USING (equipment_id, source) "
        "WHERE p.kind = $1", kind, [k[0] for k in keys], [k[1] for k in keys])}


async def _save_pending(conn: asyncpg.Connection, kind: str, carry: dict[tuple[str, str], Pending]) -> None:
    gone = [k for k, p in carry.items() if p.empty]
    kept = [(k, p) for k, p in carry.items() if not p.empty]
    if gone:
        await conn.execute(
            "DELETE FROM serve_ml_alarm_pending p USING unnest($2::text[], $3::text[]) AS k (equipment_id, source) "
            "WHERE p.kind = $1 AND p.equipment_id = k.equipment_id AND p.source = k.source",
            kind, [k[0] for k in gone], [k[1] for k in gone])
    if kept:
        await conn.execute(
            "INSERT INTO serve_ml_alarm_pending (equipment_id, kind, source, recent, since_us) "
            "SELECT k.equipment_id, $1, k.source, k.recent, k.since_us "
            "FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[]) AS k (equipment_id, source, recent, "
            "since_us) ON CONFLICT (equipment_id, kind, source) DO UPDATE SET recent = excluded.recent, "
            "since_us = excluded.since_us, updated_at = now()",
            kind, [k[0] for k, _ in kept], [k[1] for k, _ in kept], [p.recent for _, p in kept],
            [p.since_us for _, p in kept])


async def _one(conn: asyncpg.Connection, eq: str, source: str, rows: Timeline, alarm: Any, kind: AlarmType,
               log: TransitionLog, rule: _Rule, done: Transitions, book: ThresholdBook | None,
               carry: dict[tuple[str, str], Pending]) -> None:
    opens_at = 0  # the position at which a new alarm opens
    if alarm is None:
        if rule.rule.immediate:
            if not len(rows.anomalous):
                return
            opens_at = int(rows.anomalous[0])
        else:
            prior = rule.pending or Pending()
            if not len(rows.anomalous) and prior.empty:
                return
            at, carry[(eq, source)] = raise_at(rule.rule, rows.flags, rows.time_us, prior)
            if at is None:
                return
            opens_at = at
    # Verdicts are built for the flagged rows only (a new alarm's: those of the window
    # that raised it); normal rows count, and one of them may give the time it cleared.
    positions = rows.anomalous if alarm is not None else rows.anomalous[
        rows.anomalous >= opens_at - rule.rule.raise_window + 1]
    flagged = [rows.verdict(int(p)) for p in positions]
    last_block = int(rows.blocking[-1]) if len(rows.blocking) else -1
    if alarm is None or flagged:
        if alarm is None:
            last_block = max(last_block, opens_at)
        shown = flagged or [rows.verdict(opens_at)]  # raised by flags of earlier batches only
        worst = max(shown, key=lambda r: r.score)
        sev = kind.severity(shown[-1].score if kind.follows else worst.score)
        mods = sorted({m for r in shown for m in r.modalities}) if kind.name == "anomaly" else []
        detail = _detail(kind, source, worst, eq, book)
        streak = len(rows) - last_block - 1
        if alarm is None:
            opened_at = rows.time(opens_at)
            window = book.maintenance(eq, opened_at) if book is not None else None
            alarm = await conn.fetchrow(
                "INSERT INTO serve_ml_alerts (equipment_id, power, model_version, status, severity, opened_at, "
                "last_seen_at, peak_score, anomalies, normal_streak, fault_label, modalities, kind, source, detail, "
                "suppressed_by) VALUES ($1, $2, $3, 'open', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb, "
                f"$15) RETURNING {_BACK}", eq, worst.power, worst.model_version, sev, opened_at,
                max(shown[-1].time, opened_at), worst.score, len(flagged), streak, worst.fault_label, mods, kind.name,
                source, _json(detail), None if window is None else window.id)
            done.opened.append(alarm["id"])
            log.add(alarm, "opened", opened_at, extra=_event(worst, mods, detail))
        else:
            before = alarm["severity"]
            alarm = await conn.fetchrow(
                "UPDATE serve_ml_alerts SET last_seen_at = $2, peak_score = greatest(peak_score, $3), severity = $4, "
                "anomalies = anomalies + $5, normal_streak = $6, detail = coalesce($8::jsonb, detail), "
                f"modalities = ARRAY(SELECT DISTINCT unnest(modalities || $7::text[])) WHERE id = $1 RETURNING {_BACK}",
                alarm["id"], flagged[-1].time, worst.score,
                sev if kind.follows else kind.severity(max(alarm["peak_score"], worst.score)),
                len(flagged), streak, mods, _json(detail))
            if alarm["severity"] != before:
                log.add(alarm, "severity_changed", flagged[-1].time,
                        extra={"from": before, **_event(flagged[-1], mods, detail)})
        prior_streak, first_normal = 0, last_block + 1
    elif last_block >= 0:  # held by the clear margin: the streak starts again after it
        prior_streak, first_normal, streak = 0, last_block + 1, len(rows) - last_block - 1
    else:
        prior_streak, first_normal = alarm["normal_streak"], 0
        streak = prior_streak + len(rows)
    if streak >= rule.clear_after:
        cleared_at = rows.time(first_normal + rule.clear_after - prior_streak - 1)
        alarm = await conn.fetchrow("UPDATE serve_ml_alerts SET status = 'resolved', resolved_at = $2, "
                                    f"normal_streak = $3 WHERE id = $1 RETURNING {_BACK}", alarm["id"], cleared_at, streak)
        done.resolved.append(alarm["id"])
        log.add(alarm, "resolved", cleared_at)
    elif not flagged and alarm["normal_streak"] != streak:
        await conn.execute("UPDATE serve_ml_alerts SET normal_streak = $2 WHERE id = $1", alarm["id"], streak)


def _detail(kind: AlarmType, source: str, worst: Any, eq: str, book: ThresholdBook | None) -> dict[str, Any] | None:
    if kind.name == "sensor_fault":
        return {"sensor": source, "fault": FAULT_NAMES.get(int(worst.score), "unknown"), "value": worst.value}
    if kind.name != "threshold" or book is None:
        return None
    applied = book.applied(eq).get(source)
    return {"sensor": source, "value": worst.value, "level": LEVEL_NAMES[int(worst.score)],
            "limits": None if applied is None else applied.limits.model_dump(exclude_none=True),
            "scope": None if applied is None else applied.scope}


def _event(v: Any, mods: list[str], detail: dict[str, Any] | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"power": v.power, "model_version": v.model_version, "score": v.score,
                           "fault_label": v.fault_label, "modalities": mods}
    if v.rul is not None:
        doc["rul"] = v.rul
    if detail is not None:
        doc["detail"] = detail
    return doc


def _json(doc: dict[str, Any] | None) -> str | None:
    return None if doc is None else orjson.dumps(doc).decode()
