"""HTTP predictions stored like stream ones (``SERVE_ML_STORE_HTTP_PREDICTIONS``).

What ``/predict`` and ``/predict/bulk`` score goes onto the features topic, each
reading pinned to the model version that answered it and stamped with the time the
request arrived; the stream's scorers then store it in the same tables, update
status and aggregates, and raise the same alarms, exactly once (a reading's key
is its content and time). The HTTP answer waits for the broker's acknowledgement:
a reading the client was told about is never silently left unstored, and a broker
that does not acknowledge makes the request a 503 that says "scored, but not stored".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from serve_ml.core.errors import Unavailable

log = logging.getLogger("serve_ml.http_store")
SEND_TIMEOUT_S = 10.0


class HttpStore:
    """One Kafka producer per process, started on first use."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._producer: Any = None  # aiokafka.AIOKafkaProducer
        self._lock = asyncio.Lock()
        self.sent = 0

    async def _started(self) -> Any:
        if self._producer is None:
            async with self._lock:
                if self._producer is None:
                    from aiokafka import AIOKafkaProducer

                    # Not the idempotent producer (the embedded broker has no producer
                    # ids): a resent reading has the same key, stored once anyway.
                    producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=2,
                                                request_timeout_ms=int(SEND_TIMEOUT_S * 1000))
                    await producer.start()
                    self._producer = producer
        return self._producer

    async def store(self, readings: Sequence[dict[str, Any]]) -> None:
        """Send ``readings`` (equipment_id, power, model_version, features) stamped with
        now, and wait until the broker has them all; :class:`Unavailable` if it does not."""
        if not readings:
            return
        ts = dt.datetime.now(dt.UTC).isoformat()
        try:
            producer = await self._started()
            futures = [await producer.send(self.topic, orjson.dumps({**r, "ts": ts}),
                                           key=r["equipment_id"].encode()) for r in readings]
            await asyncio.wait_for(asyncio.gather(*futures), SEND_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any failure means "not stored", said to the client
            log.warning("HTTP predictions not stored: %s: %s", type(exc).__name__, exc)
            raise Unavailable(f"scored, but not stored: the broker at {self.bootstrap} did not acknowledge "
                              f"({type(exc).__name__}); SERVE_ML_STORE_HTTP_PREDICTIONS is on, so retry") from None
        self.sent += len(readings)

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


def stored_items(readings: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What to store of a request: each reading that was scored, with the power and
    version that scored it (a failed one carries its own ``error``)."""
    return [{"equipment_id": r["equipment_id"], "power": res["power"], "model_version": res["model_version"],
             "features": r["features"]}
            for r, res in zip(readings, results, strict=True) if "error" not in res]
