"""Retention: readings, predictions, finished notification deliveries and
delivered outbox rows older than ``SERVE_ML_RETENTION_DAYS`` (hourly rollups: older
than ``SERVE_ML_ROLLUP_RETENTION_DAYS``) are dropped by serve-ml itself.

On TimescaleDB the extension's own job does it (``add_retention_policy`` on both
hypertables, kept in step with the setting at every start). On plain PostgreSQL
whole daily partitions are dropped once the last moment they hold is past the
cutoff, which costs no row-by-row delete. Delivered outbox rows are deleted on
both. One stream scorer at a time does the work (an advisory lock); each run says
which path it took.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from dataclasses import dataclass, field

import asyncpg

from serve_ml.pipelines.schema import PARTITIONED, TIME_TABLES, TIMESCALE, Partitions

log = logging.getLogger("serve_ml.retention")
RETENTION_EVERY_S = 3600.0
_LOCK_KEY = 0x5E12E_13
_PARTITION = re.compile(r"^(serve_ml_(?:readings|predictions))_p(\d{8})$")


@dataclass
class RetentionReport:
    mode: str
    cutoff: dt.datetime
    ran: bool = True
    """False when another scorer held the lock this round."""
    dropped: list[str] = field(default_factory=list)
    outbox_deleted: int = 0


async def apply_retention(conn: asyncpg.Connection, mode: str, days: int, *,
                          now: dt.datetime | None = None, rollup_days: int = 365) -> RetentionReport:
    """One retention pass; returns what it did. Rollups outlive the readings they sum
    (``rollup_days``): keeping a year of hourly figures is their point."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=days)
    rollup_cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=max(days, rollup_days))
    report = RetentionReport(mode, cutoff)
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _LOCK_KEY):
            report.ran = False
            return report
        if mode == TIMESCALE:
            for t in TIME_TABLES:
                await conn.execute("SELECT remove_retention_policy($1::regclass, if_exists => true)", t)
                await conn.execute("SELECT add_retention_policy($1::regclass, $2::interval)", t,
                                   dt.timedelta(days=days))
        elif mode == PARTITIONED:
            names = await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = ANY($1::text[])", list(TIME_TABLES))
            for row in names:
                m = _PARTITION.match(row["relname"])
                # a day's partition ends at the next midnight: dropped once that is past the cutoff
                if m and dt.datetime.strptime(m[2], "%Y%m%d").replace(tzinfo=dt.UTC) + dt.timedelta(days=1) <= cutoff:
                    await conn.execute(f'DROP TABLE "{row["relname"]}"')
                    report.dropped.append(row["relname"])
        result = await conn.execute("DELETE FROM serve_ml_outbox WHERE sent_at IS NOT NULL AND sent_at < $1", cutoff)
        report.outbox_deleted = int(result.rsplit(" ", 1)[1])
        # finished notification deliveries (their attempts go with them)
        await conn.execute("DELETE FROM serve_ml_deliveries WHERE status <> 'pending' AND created_at < $1", cutoff)
        await conn.execute("DELETE FROM serve_ml_rollup_sensors_1h WHERE bucket < $1", rollup_cutoff)
        await conn.execute("DELETE FROM serve_ml_rollup_verdicts_1h WHERE bucket < $1", rollup_cutoff)
    return report


def dropped_days(report: RetentionReport) -> set[dt.date]:
    return {dt.datetime.strptime(n[-8:], "%Y%m%d").date() for n in report.dropped}


async def run_retention(pool: asyncpg.Pool, partitions: Partitions, days: int,
                        every_s: float = RETENTION_EVERY_S, rollup_days: int = 365) -> None:
    """Apply retention now and every ``every_s``; the days dropped are forgotten by
    this writer's partition cache (other writers find out at their next write)."""
    while True:
        try:
            async with pool.acquire() as conn:
                report = await apply_retention(conn, partitions.mode, days, rollup_days=rollup_days)
            partitions.forget(dropped_days(report))
            if report.ran:
                log.info("retention (%s, %d days): dropped %d partitions, %d delivered outbox rows",
                         report.mode, days, len(report.dropped), report.outbox_deleted)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # database away: the next round tries again
            log.warning("retention pass failed: %s", exc)
        await asyncio.sleep(every_s)
