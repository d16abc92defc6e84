"""Hourly and daily min / max / avg / count per sensor, with reading and anomaly
counts, per equipment: read from the hourly rollups the stream writer keeps (daily
figures are the hours of a UTC day combined, so both are exact), and rebuilt from
the stored readings by ``serve-ml db rebuild-aggregates``."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import asyncpg

from serve_ml.core.errors import InvalidQuery
from serve_ml.operations.db import OpsDB

Interval = Literal["1h", "1d"]
MAX_BUCKETS = 10_000
_UTC_HOUR = "date_trunc('hour', {t} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
_UTC_DAY = "date_trunc('day', {t} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"


def compact_range(text: str) -> tuple[dt.datetime, dt.datetime]:
    """``yyyy``, ``yyyyMM`` or ``yyyyMMdd`` as a [start, end) range in UTC."""
    if not text.isdigit() or len(text) not in (4, 6, 8):
        raise InvalidQuery(f"range {text!r}: yyyy, yyyyMM or yyyyMMdd (e.g. 2026, 202612, 20261205)")
    try:
        year = int(text[:4])
        if len(text) == 4:
            return dt.datetime(year, 1, 1, tzinfo=dt.UTC), dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC)
        month = int(text[4:6])
        start = dt.datetime(year, month, int(text[6:8]) if len(text) == 8 else 1, tzinfo=dt.UTC)
        if len(text) == 8:
            return start, start + dt.timedelta(days=1)
        return start, (dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC) if month == 12
                       else dt.datetime(year, month + 1, 1, tzinfo=dt.UTC))
    except (ValueError, OverflowError) as exc:
        raise InvalidQuery(f"range {text!r}: {exc}") from None


class Aggregates:
    def __init__(self, db: OpsDB) -> None:
        self.db = db

    async def query(self, equipment_id: str, interval: Interval, start: dt.datetime,
                    end: dt.datetime) -> list[dict[str, Any]]:
        span = (end - start) / (dt.timedelta(hours=1) if interval == "1h" else dt.timedelta(days=1))
        if span > MAX_BUCKETS:
            raise InvalidQuery(f"{span:.0f} buckets of {interval}: at most {MAX_BUCKETS}; ask for a shorter range")
        b = _UTC_HOUR.format(t="bucket") if interval == "1h" else _UTC_DAY.format(t="bucket")
        sensors = await self.db.fetch(
            f"SELECT {b} AS b, sensor, min(min) AS min, max(max) AS max, sum(sum) / sum(count) AS avg, "
            "sum(count)::bigint AS count FROM serve_ml_rollup_sensors_1h WHERE equipment_id = $1 "
            "AND bucket >= $2 AND bucket < $3 GROUP BY 1, 2 ORDER BY 1, 2", equipment_id, start, end)
        verdicts = await self.db.fetch(
            f"SELECT {b} AS b, sum(readings)::bigint AS readings, sum(anomalies)::bigint AS anomalies "
            "FROM serve_ml_rollup_verdicts_1h WHERE equipment_id = $1 AND bucket >= $2 AND bucket < $3 "
            "GROUP BY 1 ORDER BY 1", equipment_id, start, end)
        out: dict[str, dict[str, Any]] = {}
        for v in verdicts:
            out[v["b"]] = {"bucket": v["b"], "readings": v["readings"], "anomalies": v["anomalies"],
                           "anomaly_rate": v["anomalies"] / v["readings"] if v["readings"] else None,
                           "sensors": {}}
        for s in sensors:
            bucket = out.setdefault(s["b"], {"bucket": s["b"], "readings": 0, "anomalies": 0, "anomaly_rate": None,
                                             "sensors": {}})
            bucket["sensors"][s["sensor"]] = {k: s[k] for k in ("min", "max", "avg", "count")}
        return [out[k] for k in sorted(out)]


async def rebuild(conn: asyncpg.Connection, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """Recompute the rollups of every hour touching [start, end) from the stored
    readings and predictions, in one transaction (the writer's rows for those hours
    are replaced, so run it when the range is not being written, or accept that
    rows stored meanwhile are counted by the recomputation)."""
    lo = _floor_hour(start)
    hi = _floor_hour(end) + (dt.timedelta(hours=1) if end != _floor_hour(end) else dt.timedelta())
    h = _UTC_HOUR.format(t="time")
    async with conn.transaction():
        await conn.execute("DELETE FROM serve_ml_rollup_sensors_1h WHERE bucket >= $1 AND bucket < $2", lo, hi)
        await conn.execute("DELETE FROM serve_ml_rollup_verdicts_1h WHERE bucket >= $1 AND bucket < $2", lo, hi)
        sensors = await conn.execute(
            f"INSERT INTO serve_ml_rollup_sensors_1h SELECT r.equipment_id, {h}, f.key, min(f.value::float8), "
            "max(f.value::float8), sum(f.value::float8), count(*) FROM serve_ml_readings r, "
            "json_each_text(r.features) f WHERE r.time >= $1 AND r.time < $2 GROUP BY 1, 2, 3", lo, hi)
        verdicts = await conn.execute(
            f"INSERT INTO serve_ml_rollup_verdicts_1h SELECT equipment_id, {h}, count(*), "
            "count(*) FILTER (WHERE anomaly) FROM serve_ml_predictions WHERE time >= $1 AND time < $2 "
            "GROUP BY 1, 2", lo, hi)
    return {"sensor_rows": int(sensors.rsplit(" ", 1)[1]), "verdict_rows": int(verdicts.rsplit(" ", 1)[1]),
            "from": lo.isoformat(), "to": hi.isoformat()}


def _floor_hour(t: dt.datetime) -> dt.datetime:
    t = t.astimezone(dt.UTC)
    return t.replace(minute=0, second=0, microsecond=0)
