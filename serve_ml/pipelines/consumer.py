"""The stream scorer: a Ray actor in a Kafka consumer group.

Loop: take a micro-batch (bounded by ``batch_max_records`` and ``batch_wait_ms``),
decode, score it in bulk with ``bundles.batch.score_groups`` (the HTTP path's own
code), write readings + predictions + alerts in one transaction, and only then
commit the offsets. Scoring batch N+1 overlaps the write of batch N, and its copy
overlaps N's alert logic and commit (two writes in flight at most); alert state,
database commits and offset commits stay in batch order. Malformed messages go to the
dead-letter topic with a reason.
When PostgreSQL is unreachable the batch is held, consumption stops, the write is
retried with backoff and health reports ``degraded`` until it succeeds.

Ray restarts a killed actor (``max_restarts=-1``) and retries its ``run`` call
(``max_task_retries=-1``); it rejoins the group and resumes from the last commit.
Replays are harmless: writes are idempotent on ``(equipment_id, time, reading_key)``
(``pipelines.encode.reading_key``: the producer's ``reading_id``, else the content).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import ray
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from serve_ml.core.settings import Settings
from serve_ml.core.tracing import configure_logging, configure_tracing, tracer
from serve_ml.operations.follow import OpsFollower
from serve_ml.operations.live_follows import LiveAudience
from serve_ml.pipelines.backoff import Backoff
from serve_ml.pipelines.deadletter import DLQ_MAX_KEY_BYTES, DLQ_MAX_VALUE_BYTES, dead_letter_record
from serve_ml.pipelines.encode import Rows
from serve_ml.pipelines.faults import PipelineFaults
from serve_ml.pipelines.inflight import InFlight
from serve_ml.pipelines.outbox import run_relay
from serve_ml.pipelines.prepare import Prepared, prepare_batch
from serve_ml.pipelines.quality import SensorScreen
from serve_ml.pipelines.retention import run_retention
from serve_ml.pipelines.schema import Partitions
from serve_ml.pipelines.store import WriteStats, write_batch
from serve_ml.pipelines.stream_metrics import StreamMetrics
from serve_ml.pipelines.verdicts import days
from serve_ml.pipelines.watchdog import (
    ConsumerStalled,
    LogGuard,
    StallWatch,
    positions,
    refresh_lag_gauges,
    taken_lag,
)
from serve_ml.pipelines.windows import StreamWindows, pg_history
from serve_ml.scoring.control import GenerationWatcher, get_control
from serve_ml.scoring.service import ScoringService, settle_for_bulk

log = logging.getLogger("serve_ml.stream")
POSITION_CHECK_S = 0.5  # how often an idle loop reads its positions (lag, stall watch)
METADATA_MAX_AGE_MS = 10_000
CLOSE_TIMEOUT_S = 10.0  # leaving politely is not worth more when the broker is in a bad way
DB_ERRORS = (TimeoutError, OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
             asyncpg.CannotConnectNowError)
T = TypeVar("T")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset: nothing. asyncpg's default (``RESET ALL``, ``UNLISTEN *``...) is one
    more round trip per write, and each round trip waits for the event loop to come
    back from preparing the next batch; these connections change no session state
    (asyncpg still rolls back a transaction left open before calling this)."""


@ray.remote(num_cpus=0.1, max_restarts=-1, max_task_retries=-1, max_concurrency=16)  # type: ignore[call-overload]
class StreamScorer:
    def __init__(self, settings: Settings, database_url: str, bootstrap: str, mode: str, name: str, *,
                 embedded_broker: bool) -> None:
        self.s = settings
        configure_tracing(f"serve-ml-{name}", settings.otlp_endpoint)
        configure_logging(settings.log_format)
        self.database_url = database_url
        self.bootstrap = bootstrap
        self.name = name
        self.partitions = Partitions(mode)
        # The live versions operators chose (pins, rollbacks), from the first batch on.
        control = get_control(database_url)
        generation, overrides = ray.get(control.state.remote())
        self.service = ScoringService(settings.root, enable_xgb=settings.enable_xgb, live_overrides=overrides)
        self.service.generation = generation
        self.watcher = GenerationWatcher(self.service, control, 1.0)
        self.watcher.start()
        self.state = "starting"
        self.metrics = StreamMetrics(name)
        self.counts = {"consumed": 0, "stored": 0, "duplicates": 0, "conflicts": 0, "dead_lettered": 0, "batches": 0,
                       "alerts_opened": 0, "db_errors": 0, "broker_errors": 0, "commit_failures": 0, "restarts": 0,
                       "stalls": 0, "offset_resets": 0, "commits_skipped": 0}
        self.last_commit_at: float | None = None
        self.last_stored_at: float | None = None  # when the latest write transaction committed
        self.lag: int | None = None
        self.next_offsets: dict[TopicPartition, int] = {}  # per partition, the offset after the last one taken
        self.consumer: AIOKafkaConsumer | None = None
        # Only the embedded broker loses logs as a matter of course; a durable Kafka's
        # high watermark can dip during a leader failover, and re-reading a partition
        # from the beginning there would replay its whole retention (see LogGuard).
        # Told by whoever started the broker: `serve-ml up` fills kafka_bootstrap with
        # the embedded broker's address, so the settings cannot say.
        self.guard = LogGuard(in_memory_broker=embedded_broker)
        # Cumulative seconds per stage: whichever grows fastest limits throughput.
        self.busy_s = {"fetch": 0.0, "poll_empty": 0.0, "lag": 0.0, "prepare": 0.0, "wait_write": 0.0, "write": 0.0}
        self.windows = StreamWindows()  # sequence bundles' windows; refilled from PostgreSQL when short
        self.ops = OpsFollower()  # the raw thresholds in force
        self.audience = LiveAudience()  # the equipment WebSocket clients follow
        self.screen = SensorScreen(settings.flatline_readings)  # the data-quality gate
        self.faults = PipelineFaults(name, database_url, settings.alerts_topic)  # outages as alarms

    async def health(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "lag": self.lag, "last_commit_at": self.last_commit_at,
                "last_stored_at": self.last_stored_at,
                "partitions": len(self.consumer.assignment()) if self.consumer is not None else 0,
                **self.counts, "late_readings": self.windows.late, "window_readings_refilled": self.windows.refilled,
                **{f"{k}_s": round(v, 3) for k, v in self.busy_s.items()}}

    async def run(self) -> None:
        """Consume until cancelled. A broker error (restart, lost group state, failed
        commit or dead-letter send) never ends it: the clients are rebuilt after a
        backoff and consumption resumes from the last committed offsets; what was
        stored meanwhile is not stored twice (idempotent writes)."""
        backoff = Backoff()
        settle_for_bulk()  # what the clients and caches built at start stays alive
        while True:
            batches = self.counts["batches"]
            try:
                await self._run_once()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.state = "degraded"
                self.counts["restarts"] += 1
                await self.faults.failing("stream loop", exc)
                if self.counts["batches"] > batches:  # the pace is for failures in a row
                    backoff.reset()
                delay = backoff.next_s()
                log.warning("stream loop failed (%s: %s); restarting its Kafka clients in %.1fs",
                            type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)

    def _clients(self) -> tuple[AIOKafkaProducer, AIOKafkaConsumer]:
        s = self.s
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=s.consumer_group,
            enable_auto_commit=False, auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=64 << 20, max_poll_records=s.batch_max_records,
            # A fetch that finds nothing new is answered by Tansu when its max wait runs
            # out, not when data arrives (measured: one message produced to an idle
            # topic reached the consumer after a median 115 ms at aiokafka's default of
            # 500 ms, 5 ms at 50 ms). Waiting no longer than a micro-batch may: in bench
            # stream, produce->stored p99 ~300 -> ~50 ms, and end to end a median of
            # 52.5k -> 70.1k readings/s over 3 alternating runs.
            fetch_max_wait_ms=s.batch_wait_ms,
            # A broker that comes back without a topic, or with it recreated, is noticed
            # at the next metadata refresh (the default is every 5 minutes).
            metadata_max_age_ms=METADATA_MAX_AGE_MS)
        return producer, consumer

    async def _run_once(self) -> None:
        """One life of the Kafka clients: the stages fetch, prepare (decode + score +
        encode), store (write, alerts, commit; in the background) and, when a fetch
        finds nothing, the idle checks (lag, stall watch, lost logs)."""
        s = self.s
        # Two writes and the outbox relay.
        pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=4, reset=_keep_session)
        producer, consumer = self._clients()
        self.consumer = consumer
        self.next_offsets = {}
        loop = InFlight(StallWatch(s.stream_stall_timeout_s), lambda: positions(consumer, s.features_topic,
                                                                               s.stream_consumers))
        background: list[asyncio.Task[None]] = []
        try:
            await producer.start()
            await consumer.start()
            consumer.subscribe([s.features_topic], listener=self.guard.assignment)
            wake = asyncio.Event()
            try:
                await self.ops.refresh(pool)  # thresholds apply from the first batch on
                await self.audience.refresh(pool)
            except (asyncpg.PostgresError, *DB_ERRORS) as exc:
                log.warning("threshold book, live audience: %s (retried in the background)", exc)
            background += [asyncio.create_task(run_relay(pool, producer, wake)),
                           asyncio.create_task(run_retention(pool, self.partitions, s.retention_days,
                                                             rollup_days=s.rollup_retention_days)),
                           asyncio.create_task(self.ops.run(pool)), asyncio.create_task(self.audience.run(pool))]
            self.state = "running"
            while True:
                t0 = time.perf_counter()
                batch = await consumer.getmany(timeout_ms=s.batch_wait_ms, max_records=s.batch_max_records)
                records = [r for part in batch.values() for r in part]
                if records:
                    self.busy_s["fetch"] += time.perf_counter() - t0
                    await self._take(batch, records, loop, pool, producer, consumer, wake)
                else:
                    self.busy_s["poll_empty"] += time.perf_counter() - t0
                    await self._idle(loop, consumer)
        finally:
            loop.abandon()
            for task in background:
                task.cancel()
            self.state = "stopped"
            for close in (consumer.stop, producer.stop, pool.close):
                try:
                    await asyncio.wait_for(close(), CLOSE_TIMEOUT_S)
                except Exception as exc:  # a broker that is gone cannot be left politely
                    log.debug("closing %s: %s", close, exc)

    async def _take(self, batch: dict[TopicPartition, list[ConsumerRecord]], records: list[ConsumerRecord],
                    loop: InFlight, pool: asyncpg.Pool, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer,
                    wake: asyncio.Event) -> None:
        """Prepare a fetched batch and start its write. Pipelined: while batch N is
        written and committed (the database's work), batch N+1 is fetched, decoded and
        scored (this process's work), and its copy may start before N has committed;
        alert logic, database commits and offset commits stay in batch order (_store)."""
        loop.stall.progressed()
        t1 = time.perf_counter()
        offsets = {tp: part[-1].offset + 1 for tp, part in batch.items() if part}
        self.next_offsets.update(offsets)
        self.screen.book = self.ops.book
        prepared = await prepare_batch(records, offsets, self.guard.epoch, self.service.catalog, self.s,
                                       self.windows, pg_history(pool), self.screen)
        t2 = time.perf_counter()
        self.busy_s["prepare"] += t2 - t1
        if loop.older is not None:  # two writes in flight at most
            await loop.older
        stamped = days(prepared.rows.judged)
        if self.partitions.missing(stamped):
            # A new day's partition locks its parent table until every transaction
            # that wrote to it ends, and a later batch's transaction waits for this
            # one: created here, with none of this scorer's writes in flight.
            if loop.pending is not None:
                await loop.pending
            async with pool.acquire() as conn:
                await self.partitions.ensure(conn, stamped)
        self.busy_s["wait_write"] += time.perf_counter() - t2
        loop.older, loop.pending = loop.pending, asyncio.create_task(
            self._store(prepared, pool, producer, consumer, wake, after=loop.pending))
        t3 = time.perf_counter()
        self.lag = taken_lag(consumer, self.next_offsets, self.metrics)
        # A rebalance hands over positions from committed offsets, which a broker that
        # lost its logs may hold from the old ones: checked now, not at the next idle
        # poll, which a busy loop may not reach for a long while.
        self._count_resets(await self.guard.check(consumer, None, loop.read_positions))
        self.busy_s["lag"] += time.perf_counter() - t3

    async def _idle(self, loop: InFlight, consumer: AIOKafkaConsumer) -> None:
        """Nothing fetched: finish done writes; twice a second, read positions for the
        lag figure, the stall watch and the lost-log check."""
        await loop.reap()
        if time.monotonic() < loop.next_check_s:
            return
        # Each position read costs a turn of the event loop: twice a second is enough
        # for a lag figure and a 20 s stall watch.
        loop.next_check_s = time.monotonic() + POSITION_CHECK_S
        seen = await loop.read_positions()
        await refresh_lag_gauges(consumer, self.next_offsets, self.metrics)
        self.lag = seen.lag
        if self._count_resets(await self.guard.check(consumer, seen, loop.read_positions)):
            return  # reading resumes from the beginning: not a stall
        if loop.stall.stalled(time.monotonic(), seen):
            self.counts["stalls"] += 1
            raise ConsumerStalled(f"no record taken for {self.s.stream_stall_timeout_s:g}s while behind "
                                  f"({seen.describe()})")

    def _count_resets(self, tps: list[TopicPartition]) -> bool:
        for tp in tps:
            self.next_offsets.pop(tp, None)
        self.counts["offset_resets"] += len(tps)
        return bool(tps)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int], epoch: int) -> None:
        if epoch != self.guard.epoch:
            # Taken before a rebalance or a reset: the partitions may belong to another
            # member now, or their log to another life of the broker, which (the
            # embedded one) accepts a commit from a membership it no longer knows.
            # Not committing is safe: whoever reads them next gets the batch again and
            # the idempotent write skips it.
            self.counts["commits_skipped"] += 1
            return
        try:
            # aiokafka retries a commit for as long as it finds no group coordinator;
            # past the stall timeout the clients are rebuilt instead (the batch is
            # stored, a redelivery is deduplicated).
            await asyncio.wait_for(consumer.commit(offsets), self.s.stream_stall_timeout_s)
            self.last_commit_at = time.time()
        except TimeoutError as exc:
            self.counts["stalls"] += 1
            raise ConsumerStalled(f"offset commit unanswered for {self.s.stream_stall_timeout_s:g}s") from exc
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on (rebalance, or a broker that lost its group state): the
            # batch is stored; whoever owns the partitions now gets it again and the
            # idempotent write skips it. Not a reason to stop consuming.
            self.counts["commit_failures"] += 1
            log.warning("offset commit refused (%s); the batch is stored, a redelivery is deduplicated",
                        type(exc).__name__)

    async def _store(self, batch: Prepared, pool: asyncpg.Pool, producer: AIOKafkaProducer,
                     consumer: AIOKafkaConsumer, wake: asyncio.Event, after: asyncio.Task[None] | None) -> None:
        """Dead-letter, write, then commit: the offsets of a batch are committed only
        once everything in it is stored or dead-lettered.

        ``after`` is the previous batch's store, still running. This batch's rows are
        copied meanwhile, but its alert logic, its database commit and its offset
        commit wait for that one to finish: alert state and offsets move in batch
        order, and a failure of the previous batch fails this one (nothing of it
        committed)."""
        with tracer().start_as_current_span("stream.batch", attributes={
                "serve_ml.scorer": self.name, "serve_ml.consumed": batch.consumed, "serve_ml.dead": len(batch.dead)}):
            await self._store_traced(batch, pool, producer, consumer, wake, after)

    async def _store_traced(self, batch: Prepared, pool: asyncpg.Pool, producer: AIOKafkaProducer,
                            consumer: AIOKafkaConsumer, wake: asyncio.Event, after: asyncio.Task[None] | None) -> None:
        if batch.dead:
            await self._dead_letter(producer, batch.dead)
        t0 = time.perf_counter()
        stats = await self._write(pool, batch.rows, after)
        if after is not None:
            await asyncio.shield(after)  # an empty batch writes nothing, so waited for nothing
        self.busy_s["write"] += time.perf_counter() - t0
        self.counts["consumed"] += batch.consumed
        self.counts["batches"] += 1
        self.counts["stored"] += stats.predictions
        self.last_stored_at = time.time()
        self.counts["duplicates"] += stats.duplicates
        self.metrics.batch(consumed=batch.consumed, stored=stats.predictions, duplicates=stats.duplicates,
                           write_s=time.perf_counter() - t0, opened=len(stats.alerts_opened),
                           resolved=len(stats.alerts_resolved),
                           anomalies=[(j.equipment_id, int(j.anomaly.sum())) for j in batch.rows.judged])
        if stats.conflicts:
            # Stored already under the same reading_id with other values: the stored one
            # stays, this one goes to the dead-letter topic before the offsets move on.
            taken = {(r.partition, r.offset): r for r in batch.records}
            conflicting = [(taken[pos], "reading_id: already stored for this equipment and time with other "
                            "features; not stored") for pos in stats.conflicts if pos in taken]
            await self._dead_letter(producer, conflicting)
            self.counts["conflicts"] += len(conflicting)
        self.counts["alerts_opened"] += len(stats.alerts_opened)
        if stats.alerts_opened or stats.alerts_resolved:
            wake.set()
        if self.faults.active:  # a batch stored: whatever failed works again
            await self.faults.recovered()
        await self._commit(consumer, batch.offsets, batch.epoch)

    async def _write(self, pool: asyncpg.Pool, rows: Rows, after: asyncio.Task[None] | None) -> WriteStats:
        async def previous() -> None:
            if after is not None:
                # shield: cancelling this write must not cancel the previous one.
                await asyncio.shield(after)

        async def write() -> WriteStats:
            async with pool.acquire() as conn:
                return await write_batch(conn, rows, partitions=self.partitions, alerts_topic=self.s.alerts_topic,
                                         resolve_after=self.s.alert_resolve_after, before_alerts=previous,
                                         book=self.ops.book, live=self.audience.equipment)

        return await self._hold_and_retry(write, DB_ERRORS, "db_errors", "database write")

    async def _dead_letter(self, producer: AIOKafkaProducer, dead: list[tuple[ConsumerRecord, str]]) -> None:
        async def publish() -> None:
            futures = []
            for rec, reason in dead:
                value, headers = dead_letter_record(rec.value, reason, DLQ_MAX_VALUE_BYTES)
                headers += [("source_topic", rec.topic.encode()), ("source_partition", str(rec.partition).encode()),
                            ("source_offset", str(rec.offset).encode())]
                key = None if rec.key is None else rec.key[:DLQ_MAX_KEY_BYTES]
                futures.append(await producer.send(self.s.dead_letter_topic, value, key=key, headers=headers))
            await asyncio.gather(*futures)

        await self._hold_and_retry(publish, (KafkaError,), "broker_errors", "dead-letter publish")
        self.counts["dead_lettered"] += len(dead)
        self.metrics.dead_lettered(reason for _rec, reason in dead)

    async def _hold_and_retry(self, op: Callable[[], Awaitable[T]], errors: tuple[type[BaseException], ...],
                              counter: str, what: str) -> T:
        """Hold the batch and retry ``op`` with backoff while a service is away: nothing
        is committed meanwhile, and health says ``degraded`` until it succeeds."""
        backoff = Backoff()
        while True:
            try:
                result = await op()
                self.state = "running"
                return result
            except errors as exc:
                self.state = "degraded"
                self.counts[counter] += 1
                await self.faults.failing(what, exc)
                delay = backoff.next_s()
                log.warning("%s failed (%s); retrying the batch in %.1fs", what, type(exc).__name__, delay)
                await asyncio.sleep(delay)
