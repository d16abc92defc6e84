"""Notifications: alarm transitions from the outbox to Slack-compatible webhooks,
signed webhooks and email, as the routing rules of ``SERVE_ML_NOTIFICATIONS_FILE``
say (``operations.notify_config``).

Two steps, each safe with several notifiers running:

* **route**: outbox rows not yet routed become one delivery row per matching sink
  (unique per event and sink, so an event is routed to a sink once), in the
  transaction that marks them routed;
* **deliver**: due deliveries are leased, sent (in event order per sink, sinks in
  parallel), and every attempt is recorded, successes a group at a time (so a crash
  can send up to a group again: delivery is at least once, and each request carries
  its delivery id for receivers to de-duplicate). A failure waits with exponential
  backoff; after ``max_attempts`` the delivery is failed. A sink that fails
  ``fault_after_failures`` times in a row raises a pipeline-fault alarm (its own
  faults are not sent to it); its first success clears that alarm. One sink failing
  never holds up the others.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
from collections import defaultdict
from email.message import EmailMessage
from typing import Any

import aiohttp
import asyncpg
import orjson
import ray

from serve_ml.core.settings import Settings
from serve_ml.operations.alarm_store import clear_system_alarm, raise_system_alarm
from serve_ml.operations.notify_config import (
    EmailSink,
    NotificationsConfig,
    SlackSink,
    WebhookSink,
    load_config,
    summary,
)

log = logging.getLogger("serve_ml.notify")
IDLE_S = 0.2
ROUTE_BATCH = 500
DELIVER_BATCH = 200
RECORD_EVERY = 50  # deliveries
RECORD_WITHIN_S = 1.0


class Notifier:
    def __init__(self, config: NotificationsConfig, alerts_topic: str) -> None:
        self.config = config
        self.topic = alerts_topic
        self.sinks = {s.name: s for s in config.sinks}
        self.failures: dict[str, int | None] = dict.fromkeys(self.sinks)  # None: unknown since start
        self.counts = {"routed_events": 0, "deliveries": 0, "delivered": 0, "failed_attempts": 0, "failed": 0}

    async def route_once(self, pool: asyncpg.Pool) -> int:
        """Route one batch of outbox rows; return how many were routed."""
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, key, payload::text AS payload, created_at < now() - make_interval(secs => $2) AS stale "
                "FROM serve_ml_outbox WHERE routed_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                ROUTE_BATCH, self.config.max_event_age_s)
            if not rows:
                return 0
            events = [(r["id"], orjson.loads(r["payload"])) for r in rows if not r["stale"]]
            eqs = list({e.get("equipment_id") for _, e in events if e.get("equipment_id")})
            where = {r["equipment_id"]: tuple(r["location"]) for r in await conn.fetch(
                "SELECT equipment_id, location FROM serve_ml_equipment WHERE equipment_id = ANY($1::text[])", eqs)}
            out = []
            for outbox_id, event in events:
                if "alert_id" not in event:
                    continue
                for name, sink in self.sinks.items():
                    if event.get("source") == f"sink:{name}":
                        continue  # a sink is not told about its own failures
                    if sink.route.matches(event, where.get(event.get("equipment_id", ""))):
                        out.append((outbox_id, name, orjson.dumps(event).decode()))
            if out:
                await conn.executemany(
                    "INSERT INTO serve_ml_deliveries (outbox_id, sink, payload, status) VALUES ($1, $2, $3::jsonb, "
                    "'pending') ON CONFLICT (outbox_id, sink) DO NOTHING", out)
            await conn.execute("UPDATE serve_ml_outbox SET routed_at = now() WHERE id = ANY($1::bigint[])",
                               [r["id"] for r in rows])
        self.counts["routed_events"] += len(rows)
        self.counts["deliveries"] += len(out)
        return len(rows)

    async def deliver_once(self, pool: asyncpg.Pool, client: aiohttp.ClientSession) -> int:
        """Send the due deliveries (leased, so another notifier skips them); return how many were tried."""
        lease_s = max(s.timeout_s for s in self.sinks.values()) + 5 if self.sinks else 10
        rows = await pool.fetch(
            "UPDATE serve_ml_deliveries d SET next_at = now() + make_interval(secs => $2) FROM ("
            " SELECT id FROM serve_ml_deliveries WHERE status = 'pending' AND next_at <= now() ORDER BY id "
            " LIMIT $1 FOR UPDATE SKIP LOCKED) due WHERE d.id = due.id "
            "RETURNING d.id, d.sink, d.payload::text AS payload, d.attempts", DELIVER_BATCH, float(lease_s))
        by_sink: dict[str, list[Any]] = defaultdict(list)
        for r in sorted(rows, key=lambda r: r["id"]):
            by_sink[r["sink"]].append(r)
        await asyncio.gather(*(self._sink_batch(pool, client, name, batch) for name, batch in by_sink.items()))
        return len(rows)

    async def _sink_batch(self, pool: asyncpg.Pool, client: aiohttp.ClientSession, name: str,
                          batch: list[Any]) -> None:
        sink = self.sinks.get(name)
        sent: list[tuple[Any, dt.datetime, float]] = []  # delivered, not yet recorded
        for k, row in enumerate(batch):
            at, t0 = dt.datetime.now(dt.UTC), time.perf_counter()
            if not sent:
                oldest = t0
            error = "the sink is no longer configured" if sink is None else None
            if sink is not None:
                try:
                    await asyncio.wait_for(send(sink, orjson.loads(row["payload"]), row["id"], client),
                                           sink.timeout_s)
                except Exception as exc:  # any failure of the receiver is recorded, never raised
                    error = f"{type(exc).__name__}: {exc}"[:1000] or type(exc).__name__
            ms = (time.perf_counter() - t0) * 1e3
            if error is None:
                sent.append((row, at, ms))
                # Recorded a group at a time (one transaction, not one per delivery), but
                # soon: a delivery sent and not yet recorded is sent again after a crash.
                if len(sent) >= RECORD_EVERY or time.perf_counter() - oldest > RECORD_WITHIN_S:
                    await self._record_delivered(pool, name, sent)
                    sent = []
                continue
            await self._record_delivered(pool, name, sent)
            await self._record_failed(pool, name, row, error, at, ms)
            # The rest wait for the same backoff: order per sink is kept, and a dead
            # receiver is not hammered.
            await pool.execute("UPDATE serve_ml_deliveries SET next_at = (SELECT next_at FROM "
                               "serve_ml_deliveries WHERE id = $1) WHERE id = ANY($2::bigint[]) AND "
                               "status = 'pending'", row["id"], [r["id"] for r in batch[k + 1:]])
            return
        await self._record_delivered(pool, name, sent)

    async def _record_delivered(self, pool: asyncpg.Pool, name: str,
                                sent: list[tuple[Any, dt.datetime, float]]) -> None:
        if not sent:
            return
        ids = [row["id"] for row, _, _ in sent]
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO serve_ml_delivery_attempts (delivery_id, at, ok, duration_ms) "
                "SELECT u.id, u.at, true, u.ms FROM unnest($1::bigint[], $2::timestamptz[], $3::float8[]) "
                "AS u(id, at, ms)",
                ids, [at for _, at, _ in sent], [ms for _, _, ms in sent])
            await conn.execute(
                "UPDATE serve_ml_deliveries d SET status = 'delivered', attempts = u.attempts, "
                "delivered_at = u.at, last_error = NULL FROM unnest($1::bigint[], $2::int[], $3::timestamptz[]) "
                "AS u(id, attempts, at) WHERE d.id = u.id",
                ids, [row["attempts"] + 1 for row, _, _ in sent], [at for _, at, _ in sent])
            if self.failures.get(name) != 0:
                await clear_system_alarm(conn, self.topic, f"sink:{name}")
        self.failures[name] = 0
        self.counts["delivered"] += len(sent)

    async def _record_failed(self, pool: asyncpg.Pool, name: str, row: Any, error: str, at: dt.datetime,
                             ms: float) -> None:
        attempts = row["attempts"] + 1
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO serve_ml_delivery_attempts (delivery_id, at, ok, error, duration_ms) "
                               "VALUES ($1, $2, false, $3, $4)", row["id"], at, error, ms)
            final = attempts >= self.config.max_attempts
            await conn.execute(
                "UPDATE serve_ml_deliveries SET status = $2, attempts = $3, last_error = $4, "
                "next_at = now() + make_interval(secs => $5) WHERE id = $1", row["id"],
                "failed" if final else "pending", attempts, error, self.config.backoff_s(attempts))
            self.failures[name] = (self.failures.get(name) or 0) + 1
            self.counts["failed_attempts"] += 1
            self.counts["failed"] += final
            if self.failures[name] >= self.config.fault_after_failures:  # type: ignore[operator]
                await raise_system_alarm(conn, self.topic, f"sink:{name}", "major",
                                         {"sink": name, "failures_in_a_row": self.failures[name], "error": error})
        log.warning("notification to %s failed (attempt %d): %s", name, attempts, error)

    async def run(self, database_url: str) -> None:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
        try:
            # aiohttp rather than httpx: about a fifth of the CPU per POST on these machines
            # (0.10 vs 0.55 ms), and the notifier shares its cores with the scorers
            async with aiohttp.ClientSession() as client:
                while True:
                    try:
                        busy = await self.route_once(pool) + await self.deliver_once(pool, client)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # the database away: try again shortly
                        log.warning("notifier: %s", exc)
                        busy = 0
                    if not busy:
                        await asyncio.sleep(IDLE_S)
        finally:
            await pool.close()


async def send(sink: WebhookSink | SlackSink | EmailSink, event: dict[str, Any], delivery_id: int,
               client: aiohttp.ClientSession) -> None:
    """One attempt; raises on any failure (a non-2xx answer included)."""
    if isinstance(sink, EmailSink):
        await asyncio.to_thread(_send_mail, sink, event)
        return
    headers = {"content-type": "application/json", "user-agent": "serve-ml-notifier",
               "x-serve-ml-delivery": str(delivery_id)}
    if isinstance(sink, SlackSink):
        body = orjson.dumps({"text": summary(event)})
    else:
        body = orjson.dumps(event)
        ts = str(int(time.time()))
        mac = hmac.new(sink.secret.get_secret_value().encode(), ts.encode() + b"." + body, hashlib.sha256)
        headers |= {"x-serve-ml-timestamp": ts, "x-serve-ml-signature": "sha256=" + mac.hexdigest()}
    async with client.post(sink.url, data=body, headers=headers,
                           timeout=aiohttp.ClientTimeout(total=sink.timeout_s)) as r:
        await r.read()  # the body is not used, but reading it frees the connection for the next send
        if not 200 <= r.status < 300:
            raise RuntimeError(f"HTTP {r.status} from {sink.name}")


def _send_mail(sink: EmailSink, event: dict[str, Any]) -> None:
    msg = EmailMessage()
    msg["Subject"] = summary(event)
    msg["From"] = sink.sender
    msg["To"] = ", ".join(sink.to)
    msg.set_content(summary(event) + "\n\n" + json.dumps(event, indent=2, sort_keys=True, default=str))
    with smtplib.SMTP(sink.host, sink.port, timeout=sink.timeout_s) as smtp:
        if sink.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if sink.username:
            smtp.login(sink.username, sink.password.get_secret_value() if sink.password else "")
        smtp.send_message(msg)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class NotifierActor:
    """The notifier as a Ray actor (``Stack.start_actors``): restarted if it dies;
    deliveries it had leased are sent again once their lease runs out."""

    def __init__(self, settings: Settings, database_url: str) -> None:
        assert settings.notifications_file is not None
        self.notifier = Notifier(load_config(settings.notifications_file), settings.alerts_topic)
        self.database_url = database_url

    async def run(self) -> None:
        await self.notifier.run(self.database_url)

    async def health(self) -> dict[str, Any]:
        return {"sinks": sorted(self.notifier.sinks), **self.notifier.counts,
                "failing": {k: v for k, v in self.notifier.failures.items() if v}}
