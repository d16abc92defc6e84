"""What ``make up`` registers when it simulates machines and the registry is
empty: the simulated equipment in two sites, and thresholds at the three scopes,
so threshold breaches, sensor faults and the status roll-up show from the first
minute. An operator's own registry is never touched.

With no notification sinks configured, the demo also gets one sink that is down
(:func:`write_demo_sinks`), so a ``pipeline_fault`` alarm shows how serve-ml reports
a delivery path that keeps failing, as the simulator's quirks show sensor faults."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import orjson

from serve_ml.operations.db import bump_generation

SITES = (("site-north", "hall-1", "line-1"), ("site-north", "hall-2", "line-1"), ("site-south", "hall-a", "line-1"))
DEMO_ACTOR = "serve-ml demo"
# (scope, target, sensor, limits): ISO 10816 class II vibration zones for presses and
# spindles, the transducer's physical range, a site-wide process-temperature limit, a
# mill torque limit.
THRESHOLDS = (
    ("type", "press", "vibration_rms_mm_s", {"warning_max": 4.5, "critical_max": 7.1, "valid_min": 0.0,
                                              "valid_max": 50.0}),
    ("location", "site-north", "process_temp_k", {"warning_max": 313.0, "critical_max": 315.0}),
    ("equipment", "mill-01", "torque_nm", {"warning_max": 65.0, "critical_max": 75.0}),
    ("type", "spindle", "vibration_rms_mm_s", {"warning_max": 4.5, "critical_max": 7.1, "valid_min": 0.0,
                                                "valid_max": 50.0}),
)


async def seed_demo(conn: asyncpg.Connection, equipment_ids: list[str]) -> bool:
    """Register ``equipment_ids`` and the demo thresholds unless the registry has
    anything in it; True when it seeded."""
    async with conn.transaction():
        if await conn.fetchval("SELECT count(*) FROM serve_ml_equipment") or \
                await conn.fetchval("SELECT count(*) FROM serve_ml_thresholds"):
            return False
        for i, eq in enumerate(equipment_ids):
            await conn.execute(
                "INSERT INTO serve_ml_equipment (equipment_id, name, type, location, metadata) "
                "VALUES ($1, $2, $3, $4, $5::jsonb)", eq, eq.replace("-", " ").title(), eq.split("-")[0],
                list(SITES[i % len(SITES)]), orjson.dumps({"registered_by": DEMO_ACTOR}).decode())
        for scope, target, sensor, limits in THRESHOLDS:
            cols = ", ".join(limits)
            marks = ", ".join(f"${k}" for k in range(6, 6 + len(limits)))
            await conn.execute(
                f"INSERT INTO serve_ml_thresholds (scope, target, sensor, version, set_by, reason, {cols}) "
                f"VALUES ($1, $2, $3, 1, $4, $5, {marks})", scope, target, sensor, DEMO_ACTOR,
                "demo thresholds of `make up`", *limits.values())
            await conn.execute(
                "INSERT INTO serve_ml_threshold_history (scope, target, sensor, action, version, current, actor, "
                "reason) VALUES ($1, $2, $3, 'set', 1, $4::jsonb, $5, $6)", scope, target, sensor,
                orjson.dumps(limits).decode(), DEMO_ACTOR, "demo thresholds of `make up`")
        await bump_generation(conn)
    return True


DEMO_SINK = "demo-sink-that-is-down"


def write_demo_sinks(state_dir: Path, port: int) -> Path:
    """A notifications file with one Slack-compatible sink on a local ``port`` nothing
    listens on: every delivery is refused, and after three in a row the notifier
    raises a ``pipeline_fault`` alarm (source ``sink:demo-sink-that-is-down``)."""
    path = state_dir / "demo-notifications.yaml"
    path.write_text(f"""# Written by `serve-ml up` for the demo (no SERVE_ML_NOTIFICATIONS_FILE was set):
# a sink that is down on purpose, to show a pipeline_fault alarm. Set
# SERVE_ML_NOTIFICATIONS_FILE to your own sinks to replace it.
backoff_initial_s: 2.0
backoff_max_s: 60.0
sinks:
  - name: {DEMO_SINK}
    kind: slack
    url: http://127.0.0.1:{port}/nothing-listens-here
    timeout_s: 2.0
    route: {{min_severity: major}}
""")
    return path
