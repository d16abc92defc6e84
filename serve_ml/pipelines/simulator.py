"""``serve-ml simulate``: realistic readings for many machines, to Kafka or MQTT.

Each machine is ``equipment_id:power[:profile[:ai4i]][+quirk=sensor...]``
(profiles from ``bundles.simulation.PROFILES``, or ``run_to_failure``); ``ai4i``
limits the readings to AI4I's five signals, for bundles trained on that data set.
A ``run_to_failure`` machine wears out: it runs one simulated unit from new to
failure (``bundles.run_to_failure``, ``LIVE_READINGS_PER_CYCLE`` readings a cycle), then
the next, so a bundle with a RUL head sees its remaining life fall and alert. A quirk makes one
sensor misbehave for ``QUIRK_ON_S`` of every ``QUIRK_PERIOD_S`` seconds, so the
operations layer has something to see: ``flatline`` (the value freezes),
``drop`` (the sensor stops reporting), ``spike`` (the value jumps tenfold: over
its limits, out of its physical range). Timestamps strictly increase per machine, so
every reading has a distinct natural key ``(equipment_id, ts)``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson

from serve_ml.bundles.run_to_failure import LIVE_LIFE_CYCLES, LIVE_READINGS_PER_CYCLE, expand_cycles, simulate_fleet
from serve_ml.bundles.run_to_failure import SENSORS as RUN_TO_FAILURE_SENSORS
from serve_ml.bundles.simulation import LIVE_WALK_READINGS, MECHANICAL, PROFILES, THERMAL, MachineSpec, simulate

AI4I_SIGNALS = (*THERMAL, *MECHANICAL[:3])
QUIRKS = ("flatline", "drop", "spike")
QUIRK_PERIOD_S, QUIRK_ON_S = 60.0, 20.0
RUN_TO_FAILURE = "run_to_failure"
LIVE_PROFILES = (*PROFILES, RUN_TO_FAILURE)


@dataclass(frozen=True)
class Machine:
    equipment_id: str
    power: str
    profile: str = "normal"
    ai4i: bool = False
    quirks: tuple[tuple[str, str], ...] = ()  # (quirk, sensor)

    @classmethod
    def parse(cls, text: str) -> Machine:
        head, *quirk_texts = text.strip().split("+")
        quirks = []
        for q in quirk_texts:
            kind, _, sensor = q.partition("=")
            if kind not in QUIRKS or not sensor:
                raise ValueError(f"machine {text!r}: quirk {q!r} is not one of "
                                 f"{', '.join(k + '=<sensor>' for k in QUIRKS)}")
            quirks.append((kind, sensor))
        m = cls._parse(head)
        return cls(m.equipment_id, m.power, m.profile, m.ai4i, tuple(quirks))

    @classmethod
    def _parse(cls, text: str) -> Machine:
        parts = text.strip().split(":")
        ok = 2 <= len(parts) <= 4 and (len(parts) < 3 or parts[2] in LIVE_PROFILES) and (
            len(parts) < 4 or parts[3] == "ai4i")
        if not ok:
            raise ValueError(f"machine {text!r}: expected equipment:power[:profile[:ai4i]], "
                             f"profile one of {', '.join(LIVE_PROFILES)}")
        return cls(parts[0], parts[1], parts[2] if len(parts) > 2 else "normal", len(parts) == 4)


def parse_machines(text: str) -> list[Machine]:
    return [Machine.parse(t) for t in text.split(",") if t.strip()]


class ReadingSource:
    """Endless readings for one machine, generated in chunks (vectorised)."""

    def __init__(self, machine: Machine, seed: int, chunk: int = LIVE_WALK_READINGS) -> None:
        self.machine = machine
        self.rng = np.random.default_rng(seed)
        self.spec = MachineSpec.for_power(machine.power)
        self.chunk = chunk
        self.buf: list[dict[str, float]] = []
        self.wear = float(self.rng.uniform(0, 150))
        self.last_us = 0
        self.frozen: dict[str, float] = {}  # a flatlined sensor's value

    def next_payload(self, *, with_identity: bool = True) -> bytes:
        if not self.buf:
            cols, names = self._chunk()
            self.buf = [dict(zip(names, vals, strict=True)) for vals in zip(*(cols[n].tolist() for n in names), strict=True)]
            self.buf.reverse()
        now_us = max(int(time.time() * 1e6), self.last_us + 1)
        self.last_us = now_us
        ts = dt.datetime.fromtimestamp(now_us / 1e6, dt.UTC).isoformat()
        features = self.buf.pop()
        if self.machine.quirks and (now_us / 1e6) % QUIRK_PERIOD_S < QUIRK_ON_S:
            features = self._misbehave(features)
        body = {"ts": ts, "power": self.machine.power, "features": features}
        if with_identity:
            body["equipment_id"] = self.machine.equipment_id
        return orjson.dumps(body)


    def _chunk(self) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
        if self.machine.profile == RUN_TO_FAILURE:  # one whole unit, new to failed
            lo, hi = LIVE_LIFE_CYCLES
            unit = simulate_fleet(1, seed=int(self.rng.integers(2**31)), min_life=lo, max_life=hi)
            return expand_cycles(unit, LIVE_READINGS_PER_CYCLE, self.rng).sensors, RUN_TO_FAILURE_SENSORS
        cols = simulate(self.chunk, spec=self.spec, profile=self.machine.profile, rng=self.rng,
                        wear_start=self.wear)
        self.wear = float(cols["tool_wear_min"][-1])
        return cols, AI4I_SIGNALS if self.machine.ai4i else tuple(cols)

    def _misbehave(self, features: dict[str, float]) -> dict[str, float]:
        out = dict(features)
        for kind, sensor in self.machine.quirks:
            if sensor not in out:
                continue
            if kind == "drop":
                del out[sensor]
            elif kind == "spike":
                out[sensor] = out[sensor] * 10
            else:
                out[sensor] = self.frozen.setdefault(sensor, out[sensor])
        return out


async def run_kafka(bootstrap: str, topic: str, machines: list[Machine], rate_hz: float,
                    *, total: int | None = None, seed: int = 0, stop: Callable[[], bool] = lambda: False,
                    on_delivery: Callable[[bytes, bool], None] | None = None) -> int:
    """Publish at ``rate_hz`` per machine (0: as fast as possible) until ``total`` sent
    or ``stop()`` is true; return how many the broker acknowledged.

    A broker that goes away does not stop it: sends that fail are counted as not
    delivered (``on_delivery(payload, False)``) and the producer reconnects by itself.
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    sources = [ReadingSource(m, seed + i) for i, m in enumerate(machines)]
    # Short timeouts: during a broker outage a send fails in seconds instead of 40 s.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, request_timeout_ms=5000,
                                retry_backoff_ms=200)
    await producer.start()
    attempted = acked = 0
    pending: set[asyncio.Future] = set()

    def done(payload: bytes, fut: asyncio.Future) -> None:
        nonlocal acked
        pending.discard(fut)
        ok = not fut.cancelled() and fut.exception() is None
        acked += ok
        if on_delivery:
            on_delivery(payload, ok)

    try:
        tick = 1.0 / rate_hz if rate_hz > 0 else 0.0
        next_at = time.monotonic()
        while (total is None or attempted < total) and not stop():
            for src in sources:
                if total is not None and attempted >= total:
                    break
                payload = src.next_payload()
                attempted += 1
                try:
                    fut = await producer.send(topic, payload, key=src.machine.equipment_id.encode())
                except KafkaError:  # no metadata: the broker is down
                    if on_delivery:
                        on_delivery(payload, False)
                    await asyncio.sleep(0.2)
                    continue
                pending.add(fut)
                fut.add_done_callback(lambda f, p=payload: done(p, f))
            if tick:
                next_at = max(next_at + tick, time.monotonic() - 1.0)  # no burst after a stall
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if pending:
            await asyncio.wait(list(pending), timeout=30)
    finally:
        await producer.stop()
    return acked


async def run_mqtt(host: str, port: int, machines: list[Machine], rate_hz: float, *, total: int | None = None,
                   seed: int = 0, topic_fmt: str = "serve-ml/{}/features") -> int:
    import aiomqtt

    sources = [ReadingSource(m, seed + i) for i, m in enumerate(machines)]
    sent = 0
    async with aiomqtt.Client(host, port) as client:
        tick = 1.0 / rate_hz if rate_hz > 0 else 0.0
        while total is None or sent < total:
            for src in sources:
                if total is not None and sent >= total:
                    break
                await client.publish(topic_fmt.format(src.machine.equipment_id),
                                     src.next_payload(with_identity=False), qos=1)
                sent += 1
            if tick:
                await asyncio.sleep(tick)
    return sent
