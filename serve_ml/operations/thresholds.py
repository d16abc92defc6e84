"""Raw sensor thresholds: warning and critical limits per sensor, set per
equipment, per equipment type or per location, and which of them applies.

The most specific scope wins, sensor by sensor: the equipment's own limits, then
its type's (the physics of that kind of machine), then its location's, deepest
node first (a site-wide default). Limits are checked on the raw values, apart from
the model: a bundle can be swapped without touching them, and they change with a
reason and a history of their own (``serve_ml_threshold_history``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_ml.operations.alarm_rules import AppliedRule, RuleBook
from serve_ml.operations.scopes import UNPLACED, Placement, Scope, scope_chain

NORMAL, WARNING, CRITICAL = 0, 1, 2
LEVEL_NAMES = ("normal", "warning", "critical")


class Limits(BaseModel):
    """Warning and critical limits of one sensor; any of the four may be absent."""

    # "at least one limit" in the schema too, so the contract says what the validator does
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"anyOf": [
        {"required": [k], "properties": {k: {"type": "number"}}}
        for k in ("warning_min", "warning_max", "critical_min", "critical_max", "valid_min", "valid_max")]})

    warning_min: float | None = Field(default=None, allow_inf_nan=False, description="Warning below this value.")
    warning_max: float | None = Field(default=None, allow_inf_nan=False, description="Warning above this value.")
    critical_min: float | None = Field(default=None, allow_inf_nan=False, description="Critical below this value.")
    critical_max: float | None = Field(default=None, allow_inf_nan=False, description="Critical above this value.")
    valid_min: float | None = Field(default=None, allow_inf_nan=False,
                                    description="Physical range: below this the sensor is faulty (a sensor-fault "
                                                "alarm; the value is not fed to the model).")
    valid_max: float | None = Field(default=None, allow_inf_nan=False,
                                    description="Physical range: above this the sensor is faulty.")

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        if all(v is None for v in (self.warning_min, self.warning_max, self.critical_min, self.critical_max,
                                   self.valid_min, self.valid_max)):
            raise ValueError("give at least one of warning_min, warning_max, critical_min, critical_max, "
                             "valid_min, valid_max")
        if self.valid_min is not None and self.valid_max is not None and self.valid_min > self.valid_max:
            raise ValueError(f"valid_min ({self.valid_min}) must not be above valid_max ({self.valid_max})")
        pairs = [("critical_min", "warning_min"), ("warning_min", "warning_max"), ("warning_max", "critical_max"),
                 ("critical_min", "critical_max"), ("critical_min", "warning_max"), ("warning_min", "critical_max")]
        for lo, hi in pairs:
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{lo} ({a}) must not be above {hi} ({b})")
        return self

    def raise_bounds(self) -> tuple[float | None, float | None]:
        """The (lower, upper) values beyond which an alarm raises: the warning
        limits, or the critical ones where no warning is set."""
        lower = self.warning_min if self.warning_min is not None else self.critical_min
        upper = self.warning_max if self.warning_max is not None else self.critical_max
        return lower, upper

    def level(self, value: float) -> int:
        """The level of one value (see :func:`levels`)."""
        return int(levels(self, np.asarray([value], dtype=np.float64))[0])


def out_of_range(limits: Limits, values: np.ndarray) -> np.ndarray | None:
    """Per value, outside the physical range (None: the limits declare none)."""
    if limits.valid_min is None and limits.valid_max is None:
        return None
    out = np.zeros(len(values), dtype=bool)
    if limits.valid_min is not None:
        out |= values < limits.valid_min
    if limits.valid_max is not None:
        out |= values > limits.valid_max
    return out


def levels(limits: Limits, values: np.ndarray) -> np.ndarray:
    """Per value: 0 normal, 1 warning, 2 critical (int8). A critical limit is a
    breach at any level; a warning limit only raises to warning."""
    out = np.zeros(len(values), dtype=np.int8)
    if limits.warning_min is not None:
        out[values < limits.warning_min] = WARNING
    if limits.warning_max is not None:
        out[values > limits.warning_max] = WARNING
    if limits.critical_min is not None:
        out[values < limits.critical_min] = CRITICAL
    if limits.critical_max is not None:
        out[values > limits.critical_max] = CRITICAL
    return out


@dataclass(frozen=True, slots=True)
class Rule:
    """One stored threshold: a sensor's limits at one scope."""

    scope: Scope
    target: str  # equipment id, type name, or location path joined by "/"
    sensor: str
    limits: Limits
    version: int


@dataclass(frozen=True, slots=True)
class Applied:
    """The limits that apply to one sensor of one equipment, and where they come from."""

    sensor: str
    limits: Limits
    scope: Scope
    target: str
    version: int


@dataclass(frozen=True, slots=True)
class Window:
    """A maintenance window: an equipment, or everything at or under a location."""

    id: int
    scope: Literal["equipment", "location"]
    target: str
    starts_at: dt.datetime
    ends_at: dt.datetime


class ThresholdBook:
    """Every stored threshold with the registry's placements (and the maintenance
    windows that have not ended long ago): answers "which limits apply to this
    equipment" (cached per equipment) and "is it under maintenance at this time". A
    book is rebuilt whenever a threshold, the registry or a window changes."""

    def __init__(self, rules: Iterable[Rule], placements: Mapping[str, Placement],
                 windows: Iterable[Window] = (), alarm_rules: RuleBook | None = None) -> None:
        self.windows = list(windows)
        self.alarm_rules = alarm_rules if alarm_rules is not None else RuleBook()
        self._by_scope: dict[tuple[str, str], dict[str, Rule]] = {}
        for r in rules:
            self._by_scope.setdefault((r.scope, r.target), {})[r.sensor] = r
        self.placements = dict(placements)
        self._cache: dict[str, dict[str, Applied]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_scope) or bool(self.windows) or bool(self.alarm_rules)

    def alarm_rule(self, equipment_id: str, kind: str) -> AppliedRule:
        """The alarm rule for ``equipment_id``'s alarms of ``kind`` (see ``alarm_rules``)."""
        return self.alarm_rules.applied(equipment_id, kind, self.placements)

    def maintenance(self, equipment_id: str, at: dt.datetime) -> Window | None:
        """The window ``equipment_id`` is in at ``at``, if any."""
        if not self.windows:
            return None
        where = self.placements.get(equipment_id, UNPLACED).location
        for w in self.windows:
            if w.starts_at <= at < w.ends_at and (
                    (w.scope == "equipment" and w.target == equipment_id)
                    or (w.scope == "location" and where[:len(t := tuple(w.target.split("/")))] == t)):
                return w
        return None

    def applied(self, equipment_id: str) -> dict[str, Applied]:
        """Sensor -> the limits that apply to ``equipment_id`` (empty: none)."""
        hit = self._cache.get(equipment_id)
        if hit is not None:
            return hit
        out: dict[str, Applied] = {}
        for scope, target in scope_chain(equipment_id, self.placements.get(equipment_id, UNPLACED)):
            for sensor, r in self._by_scope.get((scope, target), {}).items():
                out.setdefault(sensor, Applied(sensor, r.limits, scope, target, r.version))
        self._cache[equipment_id] = out
        return out

    def judge(self, equipment_id: str, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Sensor -> per-row level for the sensors of ``columns`` that have limits."""
        applied = self.applied(equipment_id)
        return {s: levels(a.limits, np.asarray(columns[s], dtype=np.float64))
                for s, a in applied.items() if s in columns and np.ndim(columns[s]) == 1}


EMPTY_BOOK = ThresholdBook((), {})


def breaches(book: ThresholdBook, equipment_id: str, features: Mapping[str, float]) -> list[dict[str, object]]:
    """One reading's breaches, worst first: what HTTP predict reports."""
    applied = book.applied(equipment_id)
    out = []
    for sensor, a in applied.items():
        value = features.get(sensor)
        if value is None:
            continue
        lvl = a.limits.level(float(value))
        if lvl:
            out.append({"sensor": sensor, "level": LEVEL_NAMES[lvl], "value": float(value),
                        "limits": a.limits.model_dump(exclude_none=True), "scope": a.scope, "target": a.target})
    return sorted(out, key=lambda b: b["level"] != "critical")


# What str.strip() strips (every character whose isspace() is true), spelled out so the
# patterns below mean the same in any regex engine that reads the OpenAPI document.
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# no NUL either: PostgreSQL text cannot hold one
_PART = rf"[^/\x00{_SPACE}](?:[^/\x00]*[^/\x00{_SPACE}])?"
LOCATION_PART_PATTERN = rf"^{_PART}$"
"""One part of a location, as :func:`location_path` accepts it (for schemas)."""
LOCATION_PATTERN = rf"^(?:{_PART}(?:/{_PART})*)?$"
"""A location path as :func:`location_path` accepts it, or empty (for schemas)."""


def location_path(text: str | Sequence[str]) -> tuple[str, ...]:
    """A location as a path: "site-a/hall-1/line-2" or its parts. Empty parts and
    surrounding spaces are refused, not dropped: they are typing mistakes."""
    parts = text.split("/") if isinstance(text, str) else list(text)
    if any(not p or p != p.strip() for p in parts) and parts != [""]:
        raise ValueError(f"location {'/'.join(parts)!r}: empty or space-padded part")
    if any("\x00" in p for p in parts):
        raise ValueError(f"location {'/'.join(parts)!r}: a NUL character")
    return tuple(p for p in parts if p)
