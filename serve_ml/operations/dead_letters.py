"""The newest dead-letter records, for operators: what the stream refused and why.

Read from the dead-letter topic's tail on request (not a hot path): per partition,
the last ``limit`` records, newest first, each with its reason, where it came from,
and a printable prefix of the refused bytes. Each read opens a broker connection, so
concurrent callers share one read, and a read answers again for ``cache_s`` (the
portal polls this for every open pipeline page).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from serve_ml.core.errors import Unavailable

PREVIEW_CHARS = 300


class DeadLetters:
    def __init__(self, bootstrap: str, topic: str, *, timeout_s: float = 10.0, cache_s: float = 2.0) -> None:
        self.bootstrap, self.topic, self.timeout_s, self.cache_s = bootstrap, topic, timeout_s, cache_s
        self._lock = asyncio.Lock()
        self._last: tuple[float, int, list[dict[str, Any]]] | None = None  # (read at, limit, records)

    async def newest(self, limit: int) -> list[dict[str, Any]]:
        async with self._lock:
            last = self._last
            # A read for a larger limit holds the answer for a smaller one: the newest
            # k records overall are among the last k of their own partitions.
            if last is not None and time.monotonic() - last[0] < self.cache_s and last[1] >= limit:
                return last[2][:limit]
            try:
                records = await asyncio.wait_for(self._newest(limit), self.timeout_s)
            except (TimeoutError, OSError) as exc:
                raise Unavailable(f"the broker did not answer for the dead-letter topic: {type(exc).__name__}") from None
            self._last = (time.monotonic(), limit, records)
            return records

    async def _newest(self, limit: int) -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(self.topic) or set()
            if not partitions:
                await consumer.force_metadata_update()
                partitions = consumer.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            if not tps:
                return []
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            wanted = {}
            for tp in tps:
                first = max(starts[tp], ends[tp] - limit)
                if first < ends[tp]:
                    consumer.seek(tp, first)
                    wanted[tp] = ends[tp]
            records = []
            while wanted:
                batch = await consumer.getmany(*wanted, timeout_ms=1000)
                if not batch:
                    break
                for tp, recs in batch.items():
                    records += recs
                    if recs and recs[-1].offset + 1 >= wanted[tp]:
                        del wanted[tp]
        finally:
            await consumer.stop()
        records.sort(key=lambda r: (r.timestamp, r.partition, r.offset), reverse=True)
        return [_entry(r) for r in records[:limit]]


def _entry(r: Any) -> dict[str, Any]:
    headers = {k: v.decode("utf-8", "replace") for k, v in (r.headers or ())}
    value = r.value or b""
    return {"partition": r.partition, "offset": r.offset,
            "at": dt.datetime.fromtimestamp(r.timestamp / 1000, dt.UTC).isoformat(),
            "reason": headers.pop("reason", ""), "key": (r.key or b"")[:200].decode("utf-8", "replace"),
            "value_preview": value[:PREVIEW_CHARS].decode("utf-8", "replace"), "value_bytes": len(value),
            "headers": headers}
