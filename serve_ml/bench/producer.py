"""A steady background producer for benchmarks and fault tests: the simulator
(``run_kafka``) in a thread, recording which readings the broker acknowledged and
when, so that what is stored can be compared with what was sent, exactly."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

import orjson

from serve_ml.pipelines.simulator import Machine, run_kafka
from serve_ml.pipelines.stack import Stack


class SteadyProducer:
    """The simulator (``run_kafka``) at a steady rate in a thread, recording which
    readings the broker acknowledged and when, so fault tests can count exactly."""

    def __init__(self, stack: Stack, machine: Machine | list[Machine], rate_hz: float, *, seed: int = 0,
                 total: int | None = None) -> None:
        self.stack, self.rate_hz, self.seed, self.total = stack, rate_hz, seed, total
        self.machines = machine if isinstance(machine, list) else [machine]
        self.acked: list[tuple[str, dt.datetime, float]] = []  # (equipment, reading ts, monotonic ack time)
        self.failed: list[dt.datetime] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-producer", daemon=True)
        self.error: BaseException | None = None

    def _record(self, payload: bytes, ok: bool) -> None:
        doc = orjson.loads(payload)
        ts = dt.datetime.fromisoformat(doc["ts"])
        if ok:
            self.acked.append((doc["equipment_id"], ts, time.monotonic()))
        else:
            self.failed.append(ts)

    def _run(self) -> None:
        try:
            asyncio.run(run_kafka(self.stack.bootstrap, self.stack.settings.features_topic, self.machines,
                                  self.rate_hz, total=self.total, seed=self.seed, stop=self._stop.is_set,
                                  on_delivery=self._record))
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def __enter__(self) -> SteadyProducer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def wait(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        if self.error is not None:
            raise self.error

    def acked_ts(self, *, after: float = 0.0, before: float = float("inf")) -> set[dt.datetime]:
        return {ts for _, ts, at in self.acked if after <= at < before}

    def acked_by_equipment(self) -> dict[str, list[tuple[dt.datetime, float]]]:
        out: dict[str, list[tuple[dt.datetime, float]]] = {}
        for eq, ts, at in self.acked:
            out.setdefault(eq, []).append((ts, at))
        return out
