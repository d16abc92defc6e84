"""Alarm rules: when a flagged reading becomes an alarm, and when an alarm clears.

A rule is set per alarm type (``anomaly``, ``rul``, ``threshold``,
``sensor_fault``, or ``*`` for all) at an equipment, its type or a location, and
the most specific applies, as for thresholds: equipment, then type, then the
location deepest first; at one scope, a rule for the alarm type beats ``*``.
Without any rule an alarm opens on the first flagged reading and clears after
``SERVE_ML_ALERT_RESOLVE_AFTER`` normal ones.

* **Raise** after ``raise_count`` flagged readings among the last
  ``raise_window`` (N of M), once that condition has held for ``min_duration_s``.
  Until then nothing is published; the recent flags are carried from batch to
  batch (``serve_ml_alarm_pending``), so a condition can span batches.
* **Clear** after ``clear_after`` readings in a row that are back inside the
  raise level by ``clear_margin_pct`` percent (hysteresis): a reading between
  the raise level and the clear level neither raises nor counts toward clearing.

This module is the arithmetic only (numpy over a batch's rows, no loop per
reading); ``pipelines.alarms`` applies it inside the batch's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_ml.operations.scopes import UNPLACED, Placement, Scope, scope_chain

AlarmKind = Literal["anomaly", "rul", "threshold", "sensor_fault", "*"]
RULE_KINDS: tuple[str, ...] = ("anomaly", "rul", "threshold", "sensor_fault", "*")
MAX_WINDOW = 64  # the recent flags are kept in one bigint


class AlarmRule(BaseModel):
    """How one alarm type raises and clears at one scope."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    raise_count: int = Field(default=1, ge=1, le=MAX_WINDOW,
                             description="N: flagged readings among the last raise_window that raise the alarm.")
    raise_window: int = Field(default=1, ge=1, le=MAX_WINDOW,
                              description="M: how many of the latest readings raise_count looks at.")
    min_duration_s: float = Field(default=0.0, ge=0.0, le=7 * 86_400, allow_inf_nan=False,
                                  description="The N-of-M condition must hold this long (reading time) "
                                              "before the alarm opens.")
    clear_after: int | None = Field(default=None, ge=1, le=1_000_000,
                                    description="Readings in a row back to normal that clear the alarm (default: "
                                                "SERVE_ML_ALERT_RESOLVE_AFTER).")
    clear_margin_pct: float = Field(default=0.0, ge=0.0, le=100.0, allow_inf_nan=False,
                                    description="Hysteresis: a reading counts toward clearing only when it is back "
                                                "inside the raise level by this percentage (a threshold's warning "
                                                "limit, or the model's score of 1).")

    @model_validator(mode="after")
    def _fits(self) -> AlarmRule:
        if self.raise_count > self.raise_window:
            raise ValueError(f"raise_count ({self.raise_count}) must not exceed raise_window ({self.raise_window})")
        return self

    @property
    def immediate(self) -> bool:
        """Raises on the first flagged reading: no state to carry between batches."""
        return self.raise_count == 1 and self.min_duration_s == 0


DEFAULT_RULE = AlarmRule()


@dataclass(frozen=True, slots=True)
class StoredRule:
    scope: Scope
    target: str
    kind: str
    rule: AlarmRule
    version: int


@dataclass(frozen=True, slots=True)
class AppliedRule:
    rule: AlarmRule
    scope: Scope | None  # None: the default
    target: str | None


class RuleBook:
    """Every stored alarm rule; answers "which rule applies to this equipment's
    alarms of this type" (cached)."""

    def __init__(self, rules: Iterable[StoredRule] = ()) -> None:
        self._by_scope: dict[tuple[str, str], dict[str, StoredRule]] = {}
        for r in rules:
            self._by_scope.setdefault((r.scope, r.target), {})[r.kind] = r
        self._cache: dict[tuple[str, str], AppliedRule] = {}

    def __bool__(self) -> bool:
        return bool(self._by_scope)

    def applied(self, equipment_id: str, kind: str, placements: Mapping[str, Placement]) -> AppliedRule:
        hit = self._cache.get((equipment_id, kind))
        if hit is not None:
            return hit
        out = AppliedRule(DEFAULT_RULE, None, None)
        for scope, target in scope_chain(equipment_id, placements.get(equipment_id, UNPLACED)):
            at = self._by_scope.get((scope, target), {})
            r = at.get(kind) or at.get("*")
            if r is not None:
                out = AppliedRule(r.rule, scope, target)
                break
        self._cache[(equipment_id, kind)] = out
        return out


@dataclass(frozen=True, slots=True)
class Pending:
    """What an unraised condition carries to the next batch: the flags of the
    latest ``raise_window - 1`` readings (bit 0 the newest) and since when (µs,
    PostgreSQL epoch) the N-of-M condition has held, if it holds."""

    recent: int = 0
    since_us: int | None = None

    @property
    def empty(self) -> bool:
        return self.recent == 0 and self.since_us is None


def raise_at(rule: AlarmRule, flags: np.ndarray, time_us: np.ndarray, prior: Pending) -> tuple[int | None, Pending]:
    """The position (in ``flags``' order, time order) at which ``rule`` raises, or
    None and what to carry to the next batch."""
    n, m = len(flags), rule.raise_window
    if n == 0:
        return None, prior
    carried = np.array([(prior.recent >> (m - 2 - i)) & 1 for i in range(m - 1)], dtype=np.int64) \
        if m > 1 else np.zeros(0, dtype=np.int64)
    seq = np.concatenate([carried, flags.astype(np.int64)])
    sums = np.cumsum(np.concatenate([[0], seq]))
    counts = sums[m:] - sums[:-m]  # per new row, its flags among the last m
    holds = counts >= rule.raise_count
    # When the condition started holding, per row: a run's first row, or the carried
    # start for a run that continues from the previous batch.
    starts = holds & np.concatenate([[prior.since_us is None], ~holds[:-1]])
    idx = np.where(starts, np.arange(n), -1)
    first = np.maximum.accumulate(idx)
    start_us = np.where(first >= 0, time_us[np.maximum(first, 0)],
                        prior.since_us if prior.since_us is not None else 0)
    ok = holds & (time_us - start_us >= int(rule.min_duration_s * 1_000_000))
    hit = np.flatnonzero(ok)
    if len(hit):
        return int(hit[0]), Pending()
    tail = seq[len(seq) - (m - 1):] if m > 1 else seq[:0]
    recent = 0
    for bit in tail:
        recent = (recent << 1) | int(bit)
    return None, Pending(recent, int(start_us[-1]) if holds[-1] else None)


def score_hold(anomaly: np.ndarray, score: np.ndarray, rule: AlarmRule) -> np.ndarray | None:
    """Rows not flagged but not back inside the raise level (a score of 1) by the
    margin: they neither raise nor count toward clearing. None: no margin."""
    if rule.clear_margin_pct == 0:
        return None
    return ~anomaly & (score > 1.0 - rule.clear_margin_pct / 100.0)


def limit_hold(bounds: tuple[float | None, float | None], values: np.ndarray, flagged: np.ndarray,
               rule: AlarmRule) -> np.ndarray | None:
    """As :func:`score_hold`, for a sensor's raw values against the (lower, upper)
    values that raise (``Limits.raise_bounds``), moved inward by the margin of each
    bound's size."""
    if rule.clear_margin_pct == 0:
        return None
    frac = rule.clear_margin_pct / 100.0
    lower, upper = bounds
    hold = np.zeros(len(values), dtype=bool)
    if upper is not None:
        hold |= values > upper - abs(upper) * frac
    if lower is not None:
        hold |= values < lower + abs(lower) * frac
    return hold & ~flagged
