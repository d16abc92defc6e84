"""``serve-ml simulate`` and ``serve-ml db``: feed the stream and keep its schema."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from typing import Any

from serve_ml.cli.state import read_state
from serve_ml.core.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser("simulate", help="publish simulated sensor readings to Kafka or MQTT")
    sim.add_argument("--machines", help="equipment:power[:profile[:ai4i]],... (default SERVE_ML_SIMULATE_MACHINES)")
    sim.add_argument("--rate-hz", type=float, default=10.0, help="readings/s per machine (0: as fast as possible)")
    sim.add_argument("--count", type=int, help="stop after this many readings")
    sim.add_argument("--to", choices=("kafka", "mqtt"), default="kafka")
    sim.add_argument("--bootstrap", help="Kafka bootstrap (default: KAFKA_BOOTSTRAP or the running system's)")
    sim.add_argument("--mqtt-url", help="mqtt://host:port (default SERVE_ML_MQTT_URL)")
    sim.set_defaults(func=_simulate)
    db = sub.add_parser("db", help="database schema")
    dsub = db.add_subparsers(dest="db_command", required=True)
    mig = dsub.add_parser("migrate", help="apply pending migrations (DATABASE_URL or the running system's)")
    mig.set_defaults(func=_migrate)
    reb = dsub.add_parser("rebuild-aggregates", help="recompute the hourly rollups of a time range from the "
                                                     "stored readings and predictions")
    reb.add_argument("--from", dest="start", required=True, type=_when,
                     help="start, ISO 8601 or yyyy / yyyyMM / yyyyMMdd (UTC)")
    reb.add_argument("--to", dest="end", required=True, type=_when, help="end (exclusive), same forms")
    reb.set_defaults(func=_rebuild)


def _simulate(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from serve_ml.pipelines.simulator import parse_machines, run_kafka, run_mqtt

    s = args.settings
    machines = parse_machines(args.machines or s.simulate_machines)
    if args.to == "mqtt":
        url = urlsplit(args.mqtt_url or s.mqtt_url or "mqtt://127.0.0.1:1883")
        sent = asyncio.run(run_mqtt(url.hostname or "127.0.0.1", url.port or 1883, machines, args.rate_hz,
                                    total=args.count))
    else:
        stream = (read_state(s) or {}).get("stream") or {}
        bootstrap = args.bootstrap or s.kafka_bootstrap or stream.get("kafka_bootstrap")
        if not bootstrap:
            print("no Kafka: pass --bootstrap, set KAFKA_BOOTSTRAP, or start the system with `make up`",
                  file=sys.stderr)
            return 1
        print(f"publishing to {bootstrap} topic {s.features_topic}: {', '.join(m.equipment_id for m in machines)}",
              flush=True)
        sent = asyncio.run(run_kafka(bootstrap, s.features_topic, machines, args.rate_hz, total=args.count))
    print(f"sent {sent} readings")
    return 0


def _database_url(s: Settings) -> str:
    running = ((read_state(s) or {}).get("stream") or {}).get("database_url", "")
    url = s.database_url or (running if running and "***" not in running else None)
    if url is None:
        from serve_ml.pipelines.services import EmbeddedPostgres

        url = EmbeddedPostgres(s.state_dir / "pgdata").start()
    return url


def _migrate(args: argparse.Namespace) -> int:
    from serve_ml.pipelines.stack import prepare_database

    mode = asyncio.run(prepare_database(_database_url(args.settings), args.settings))
    print(f"schema up to date; storage mode: {mode}")
    return 0


def _when(text: str) -> dt.datetime:
    """A command-line time: ISO 8601 (UTC when no zone is given) or a compact range's start."""
    from serve_ml.core.errors import InvalidQuery
    from serve_ml.operations.aggregates import compact_range

    if text.isdigit():
        try:
            return compact_range(text)[0]
        except InvalidQuery as exc:
            raise argparse.ArgumentTypeError(exc.message) from None
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not an ISO 8601 time nor yyyy[MM[dd]]") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _rebuild(args: argparse.Namespace) -> int:
    import asyncpg

    from serve_ml.operations.aggregates import rebuild

    if args.start >= args.end:
        print("--from must be before --to", file=sys.stderr)
        return 2

    async def go() -> dict[str, Any]:
        conn = await asyncpg.connect(_database_url(args.settings))
        try:
            return await rebuild(conn, args.start, args.end)
        finally:
            await conn.close()

    done = asyncio.run(go())
    print(f"rebuilt {done['from']} .. {done['to']}: {done['sensor_rows']} sensor-hours, "
          f"{done['verdict_rows']} equipment-hours")
    return 0
