"""Rolling windows for bundles with sequence modalities, on the stream.

The scorer keeps, per (equipment, power class), the last readings its live bundle's
longest window needs, in event-time order, and scores each reading on the window
that ends at it. The rules:

* Within a micro-batch, readings are windowed in event-time order, whatever order
  they arrived in.
* A reading older than the newest one already in its window is **late**: it is
  scored without the sequence modalities (``absent``), stored, counted, and not put
  into the window (which has moved on).
* Until a window is whole (a new machine, or a longer window after a swap), the
  reading is scored without the sequence modalities.
* When a window is short, the readings stored in PostgreSQL before the batch refill
  it first (once per key and window length), so a scorer that starts or restarts is
  not blind for ``window_steps`` readings. Windows keep raw readings, so they
  survive a swap to a bundle with the same window length, and are refilled for a
  longer one.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence

import asyncpg
import numpy as np
import orjson

from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.loader import Bundle
from serve_ml.pipelines.encode import Origin
from serve_ml.pipelines.pgcopy import timestamps_us

Key = tuple[str, str]
Step = tuple[int, Mapping[str, float]]  # event time (µs), features
# (equipment, power, before, limit) -> up to ``limit`` stored readings before ``before``, newest first
FetchHistory = Callable[[str, str, dt.datetime, int], Awaitable[list[tuple[dt.datetime, Mapping[str, float]]]]]


def window_steps(bundle: Bundle) -> int:
    """The longest window any of the bundle's modalities reads (0: none)."""
    return max((m.window_steps for m in bundle.modalities.values() if m.input == "windows"), default=0)


class StreamWindows:
    """The stream's windows; implements ``bundles.batch.History`` for one batch at a
    time (``bind`` it to the batch's origins first)."""

    def __init__(self) -> None:
        self._buffers: dict[Key, deque[Step]] = {}
        self._refilled: set[tuple[Key, int]] = set()
        self._origins: Sequence[Origin] = ()
        self._times: np.ndarray | None = None
        self._sequence_eqs: tuple[int, frozenset[str]] = (0, frozenset())
        self.late = 0
        self.refilled = 0

    def bind(self, origins: Sequence[Origin]) -> None:
        """The batch the next ``windows`` calls index into (times converted on first use:
        a batch with no sequence bundle pays nothing)."""
        self._origins, self._times = origins, None

    def _time_us(self) -> np.ndarray:
        if self._times is None:
            self._times = timestamps_us([o.ts for o in self._origins])
        return self._times

    def sequence_equipment(self, catalog: Catalog) -> frozenset[str]:
        """Equipment with a live sequence bundle, worked out once per catalog."""
        if self._sequence_eqs[0] != id(catalog):
            eqs = frozenset(eq for eq in catalog.live_equipment for power in catalog.powers(eq)
                            if window_steps(catalog.live_bundle(eq, power)))
            self._sequence_eqs = (id(catalog), eqs)
        return self._sequence_eqs[1]

    def _buffer(self, key: Key, steps: int) -> deque[Step]:
        buf = self._buffers.get(key)
        if buf is None or buf.maxlen != steps - 1:
            buf = self._buffers[key] = deque(buf or (), maxlen=steps - 1)
        return buf

    async def refill(self, catalog: Catalog, origins: Sequence[Origin], equipment: Sequence[str],
                     fetch: FetchHistory) -> None:
        """Fill short windows of the batch's equipment from stored readings."""
        wanted = self.sequence_equipment(catalog)
        if not wanted:
            return
        first: dict[str, dt.datetime] = {}
        for eq, o in zip(equipment, origins, strict=True):
            if eq in wanted and (eq not in first or o.ts < first[eq]):
                first[eq] = o.ts
        for eq, before in first.items():
            for power in catalog.powers(eq):
                bundle = catalog.live_bundle(eq, power)
                steps = window_steps(bundle)
                key = (eq, power)
                buf = self._buffer(key, steps) if steps else None
                if buf is None or len(buf) >= steps - 1 or (key, steps) in self._refilled:
                    continue
                self._refilled.add((key, steps))
                stored = await fetch(eq, power, before, steps - 1)
                older = [(int(t), f) for t, f in zip(timestamps_us([t for t, _ in stored]).tolist(),
                                                     [f for _, f in stored], strict=True)]
                newest = buf[0][0] if buf else None
                merged = sorted([s for s in older if newest is None or s[0] < newest], key=lambda s: s[0]) + list(buf)
                buf.clear()
                buf.extend(merged[-(steps - 1):])
                self.refilled += len(older)

    def windows(self, bundle: Bundle, rows: list[int],
                columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """For ``rows`` of the bound batch (``columns`` aligned with them): which have a
        whole window, and those windows per feature, ``(n_whole, steps)`` in row order.
        Array work only: the per-reading cost of a batch is a few numpy passes, and
        the buffer gains at most ``steps - 1`` readings per call."""
        steps = window_steps(bundle)
        m = bundle.manifest
        buf = self._buffer((m.equipment_id, m.power), steps)
        names = list(columns)
        n = len(rows)
        full = np.zeros(n, dtype=bool)
        t = self._time_us()[np.asarray(rows, dtype=np.int64)]
        order = np.argsort(t, kind="stable")  # event time; arrival order among equal times
        if buf and n:
            on_time = t[order] >= buf[-1][0]
            self.late += int(n - on_time.sum())
            order = order[on_time]
        values = np.column_stack([np.asarray(columns[f], dtype=np.float64) for f in names]).reshape(n, len(names))
        held = np.array([[s.get(f, np.nan) for f in names] for _, s in buf], dtype=np.float64)
        # the buffer then the batch, in event time; NaN where a stored reading lacks a feature
        chain = np.concatenate([held.reshape(len(buf), len(names)), values[order]])
        ends = np.arange(len(buf), len(chain))
        starts = ends - (steps - 1)
        missing = np.concatenate([[0], np.cumsum(np.isnan(chain).any(axis=1))])
        whole = starts >= 0
        whole[whole] = missing[ends[whole] + 1] == missing[starts[whole]]
        full[order[whole]] = True
        at = np.empty(n, dtype=np.int64)
        at[order] = ends
        ks = np.flatnonzero(full)
        win = chain[at[ks][:, None] + np.arange(1 - steps, 1)]  # (n_whole, steps, features)
        newest = order[max(0, len(order) - (steps - 1)):]
        buf.extend(zip(t[newest].tolist(), (dict(zip(names, v, strict=True)) for v in values[newest].tolist()),
                       strict=True))
        return full, {f: np.ascontiguousarray(win[:, :, j]) for j, f in enumerate(names)}


def pg_history(pool: asyncpg.Pool) -> FetchHistory:
    """:data:`FetchHistory` over the stored readings (newest first)."""

    async def fetch(equipment_id: str, power: str, before: dt.datetime,
                    limit: int) -> list[tuple[dt.datetime, Mapping[str, float]]]:
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT time, features FROM serve_ml_readings WHERE equipment_id = $1 AND "
                                    "power = $2 AND time < $3 ORDER BY time DESC LIMIT $4",
                                    equipment_id, power, before, limit)
        return [(r["time"], orjson.loads(r["features"])) for r in rows]

    return fetch
