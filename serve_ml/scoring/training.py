"""A new version of an equipment's bundle, trained from the readings the stream stored.

The rows are one power class's stored readings in a time range. A reading is normal
when no anomaly alert of its equipment was open at its time (an alert is open from
``opened_at`` to ``resolved_at``, or to now while unresolved); the others are labelled
``alert`` and only judge the gates. The new bundle keeps the live bundle's shape: its
gates (features and model kinds, window length), derived features, power range and
source, threshold rule; it is split in time (train, calibrate, judge on consecutive
blocks), gate-only (stored readings carry no fault labels to learn). It is written
under a new version and goes live only when activated: the builder never changes
what is served.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import orjson
from packaging.version import InvalidVersion, Version
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from serve_ml.bundles.builder import BuildSpec, build_bundle
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.datasets import Ordering
from serve_ml.bundles.manifest import is_safe_segment
from serve_ml.core.errors import InvalidQuery, NotFound

ALERT = "alert"
MIN_ROWS = 200


class TrainRequest(BaseModel):
    """What to train: one power class of one equipment, from its readings in [start, end)."""

    model_config = ConfigDict(extra="forbid")

    equipment_id: str = Field(min_length=1, max_length=64)
    power: str = Field(min_length=1, max_length=64)
    start: AwareDatetime = Field(description="First reading time to use (inclusive).")
    end: AwareDatetime = Field(description="End of the range (exclusive).")
    model_version: str | None = Field(default=None, description="The new version; default: the live one with "
                                      "its minor part raised (1.2.3 -> 1.3.0), past any version already there.")
    epochs: int = Field(default=60, ge=1, le=1000)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> TrainRequest:
        if self.start >= self.end:
            raise ValueError("start must be before end")
        for v in (self.equipment_id, self.power, self.model_version):
            if v is not None and not is_safe_segment(v):
                raise ValueError(f"{v!r} is not a safe name")
        return self


async def stored_rows(database_url: str, equipment_id: str, power: str, start: dt.datetime,
                      end: dt.datetime) -> tuple[list[dt.datetime], list[dict[str, float]], np.ndarray]:
    """The stored readings in range, oldest first, and each one's label."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT time, features FROM serve_ml_readings WHERE equipment_id = $1 AND power = $2 "
                                "AND time >= $3 AND time < $4 ORDER BY time", equipment_id, power, start, end)
        alerts = await conn.fetch("SELECT opened_at, resolved_at FROM serve_ml_alerts WHERE equipment_id = $1 AND "
                                  "kind = 'anomaly' AND opened_at < $3 AND (resolved_at IS NULL OR resolved_at >= $2)",
                                  equipment_id, start, end)
    finally:
        await conn.close()
    times = [r["time"] for r in rows]
    stamps = np.array([t.timestamp() for t in times])
    inside = np.zeros(len(times), dtype=bool)
    for a in alerts:  # open from opened_at to resolved_at, or to now while unresolved
        until = np.inf if a["resolved_at"] is None else a["resolved_at"].timestamp()
        inside |= (stamps >= a["opened_at"].timestamp()) & (stamps <= until)
    return times, [orjson.loads(r["features"]) for r in rows], np.where(inside, ALERT, "none")


def next_version(live: str, taken: list[str]) -> str:
    """The live version's next minor release, past every minor already there for its
    major (1.2.3 with 1.3.0 taken -> 1.4.0)."""
    try:
        major = (Version(live).release + (0,))[0]
    except InvalidVersion:
        return f"{live}.1"
    minors = [Version(live).release[1] if len(Version(live).release) > 1 else 0]
    for t in taken:
        try:
            v = Version(t)
        except InvalidVersion:
            continue
        if v.release[0] == major:
            minors.append(v.release[1] if len(v.release) > 1 else 0)
    return f"{major}.{max(minors) + 1}.0"


def train_from_store(req: TrainRequest, database_url: str, root: Path, progress: Callable[[str], None],
                     keep_live: Callable[[str], str]) -> dict[str, Any]:
    """Build the new version; return its path, version and held-out figures.

    ``keep_live(version)`` is called with the live version before the new one is
    written: it pins it (on the running system, or in the database for the next
    start), so the newer version does not go live by itself; it says what it did."""
    import asyncio

    catalog = Catalog.scan(root, equipment_ids={req.equipment_id})
    if req.equipment_id not in catalog.live_equipment or req.power not in catalog.powers(req.equipment_id):
        raise NotFound(f"no live bundle for {req.equipment_id}/{req.power} to take the shape from")
    live = catalog.live_bundle(req.equipment_id, req.power)
    m = live.manifest
    if not m.modalities:
        raise InvalidQuery(f"{req.equipment_id}/{req.power} is a classifier-only bundle: it learns fault labels, "
                           "which stored readings do not carry")
    version = req.model_version or next_version(m.model_version, catalog.versions(req.equipment_id, req.power))
    progress(f"reading stored readings of {req.equipment_id}/{req.power} in [{req.start}, {req.end})")
    times, features, labels = asyncio.run(stored_rows(database_url, req.equipment_id, req.power, req.start, req.end))
    normal = int(np.sum(labels == "none"))
    if normal < MIN_ROWS:
        raise InvalidQuery(f"{normal} normal readings stored for {req.equipment_id}/{req.power} in that range "
                           f"({len(times)} in all); at least {MIN_ROWS} are needed")
    raw = sorted({f for fs in (mod.features for mod in m.modalities.values()) for f in fs}
                 - {d.name for d in m.derived} | {i for d in m.derived for i in d.inputs})
    missing = sorted({f for f in raw if any(f not in row for row in features)})
    if missing:
        raise InvalidQuery(f"some stored readings lack {missing}, which the live bundle's gates read")
    columns = {f: np.array([row[f] for row in features], dtype=np.float64) for f in raw}
    windows = [mod.window_steps for mod in live.modalities.values() if mod.input == "windows"]
    rules = [mod.threshold_rule for mod in m.modalities.values() if mod.threshold_rule is not None]
    spec = BuildSpec(
        equipment_id=req.equipment_id, power=req.power, model_version=version, power_range_kw=m.power_range_kw,
        default_power=m.default_power, power_source=m.power_source, derived=list(m.derived),
        modalities={n: list(mod.features) for n, mod in m.modalities.items()},
        modality_kinds={n: mod.model.kind for n, mod in m.modalities.items()},
        window_steps=max(windows, default=30), classifier=False, seed=req.seed, epochs=req.epochs, split="time")
    if rules:
        spec = spec.model_copy(update={"threshold_rule": rules[0]})
    kept = keep_live(m.model_version)
    progress(kept)
    stamps = np.array([t.timestamp() for t in times])
    progress(f"training {req.equipment_id}/{req.power}/{version} on {len(times)} readings ({normal} normal)")
    path, metrics = build_bundle(spec, columns, labels, root, data=f"serve_ml_readings:{req.start.isoformat()}/"
                                 f"{req.end.isoformat()}", progress=progress,
                                 ordering=Ordering(time=stamps, time_column="time"))
    return {"path": str(path), "model_version": version, "rows": len(times), "normal_rows": normal,
            "metrics": metrics, "live": False, "kept_live": kept}


async def pin_in_database(database_url: str, equipment_id: str, power: str, version: str, reason: str) -> None:
    """Pin ``version`` in the live-version store a start loads (no system running)."""
    import time

    from serve_ml.scoring.history import History, record_change

    history = History(database_url)
    try:
        entry = {"at": time.time(), "equipment_id": equipment_id, "power": power, "action": "activate",
                 "from": version, "to": version, "reason": reason}
        if not await record_change(history, entry, {"version": version, "pinned": True, "newest_at_set": None}):
            raise InvalidQuery("could not record the pin: database unreachable")
    finally:
        await history.close()
