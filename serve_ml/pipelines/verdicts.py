"""What the alert logic needs of stored predictions.

The stream stores every reading's prediction but raises alerts from a few of them:
the anomalies, and how many normal readings followed the last one. So a scored
group keeps its verdicts column by column (:class:`Judged`) and builds a
:class:`Verdict` only for the rows the alert logic asks about: a named tuple per
reading would cost a tenth of the scorer's CPU.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from serve_ml.pipelines.pgcopy import PG_EPOCH

_DAY_US = 86_400_000_000


class Verdict(NamedTuple):
    """One stored prediction, as the alert logic reads it."""

    time: dt.datetime
    equipment_id: str
    power: str
    model_version: str
    anomaly: bool
    score: float
    fault_label: str | None
    modalities: list[str]  # the anomalous ones
    rul: float | None = None  # remaining useful life, from a bundle with a RUL head
    value: float | None = None  # the raw value behind a threshold verdict


@dataclass(slots=True)
class Judged:
    """One scored group's verdicts, column by column (row ``i`` of each)."""

    equipment_id: str
    power: str
    model_version: str
    times: Sequence[dt.datetime]
    time_us: np.ndarray  # ``times`` as microseconds since PostgreSQL's epoch, for sorting
    anomaly: np.ndarray  # bool
    score: np.ndarray
    labels: Sequence[str | None]
    flags: Sequence[tuple[str, np.ndarray]]  # per scored modality, the rows it flagged
    keys: np.ndarray  # int64 ``reading_key`` per row (see ``pipelines.encode.reading_key``)
    rul: np.ndarray | None = None  # remaining useful life per row, from a bundle with a RUL head
    rul_alert_below: float | None = None  # that head's alert level
    inputs: dict[str, np.ndarray] | None = None  # the raw values scored, per feature
    values: np.ndarray | None = None  # a threshold view's raw values (see ``pipelines.alarms``)
    faults: dict[str, np.ndarray] | None = None  # sensor fault codes per feature (``bundles.scoring.FAULT_*``)
    errors: Sequence[tuple[str, float, np.ndarray]] | None = None  # per scored modality: threshold, errors
    hold: np.ndarray | None = None  # rows not flagged but not back to normal either (``operations.alarm_rules``)
    probabilities: Sequence[bytes | None] | None = None  # per row, the classifier's {class: p} as stored (JSON)
    rul_band: np.ndarray | None = None  # (2, rows): the RUL head's lower and upper bounds per row
    rul_unit: str | None = None

    def __len__(self) -> int:
        return len(self.times)

    def verdict(self, i: int) -> Verdict:
        anomaly = bool(self.anomaly[i])
        return Verdict(self.times[i], self.equipment_id, self.power, self.model_version, anomaly,
                       float(self.score[i]), self.labels[i], [m for m, f in self.flags if f[i]] if anomaly else [],
                       None if self.rul is None else float(self.rul[i]),
                       None if self.values is None else float(self.values[i]))

    def take(self, rows: Sequence[int]) -> Judged:
        """Only ``rows``, in that order."""
        idx = np.asarray(rows, dtype=np.intp)
        return Judged(self.equipment_id, self.power, self.model_version, [self.times[i] for i in rows],
                      self.time_us[idx], self.anomaly[idx], self.score[idx], [self.labels[i] for i in rows],
                      [(m, f[idx]) for m, f in self.flags], self.keys[idx],
                      None if self.rul is None else self.rul[idx], self.rul_alert_below,
                      None if self.inputs is None else {f: c[idx] for f, c in self.inputs.items()},
                      None if self.values is None else self.values[idx],
                      None if self.faults is None else {f: c[idx] for f, c in self.faults.items()},
                      None if self.errors is None else [(m, t, e[idx]) for m, t, e in self.errors],
                      None if self.hold is None else self.hold[idx],
                      None if self.probabilities is None else [self.probabilities[i] for i in rows],
                      None if self.rul_band is None else self.rul_band[:, idx], self.rul_unit)

    def rul_view(self) -> Judged | None:
        """The same rows judged by their RUL, for the alert logic: a row is flagged
        when its RUL is below the head's ``alert_below``, and its score is
        ``alert_below / RUL`` (above 1 when flagged; 1.5 and 3 are the major and
        critical severities, as for anomaly scores). None without a RUL alert level."""
        if self.rul is None or self.rul_alert_below is None:
            return None
        below = self.rul_alert_below
        score = below / np.maximum(self.rul, below / 1000.0) if below > 0 else np.zeros(len(self.rul))
        return Judged(self.equipment_id, self.power, self.model_version, self.times, self.time_us, self.rul < below,
                      score, [None] * len(self.times), [], self.keys, self.rul, below)


def all_verdicts(judged: Sequence[Judged]) -> list[Verdict]:
    """Every row's verdict, group after group."""
    return [j.verdict(i) for j in judged for i in range(len(j))]


def days(judged: Sequence[Judged]) -> list[dt.datetime]:
    """The start (UTC midnight) of every day a row falls on."""
    if not judged:
        return []
    day_numbers = np.unique(np.concatenate([j.time_us for j in judged]) // _DAY_US)
    return [PG_EPOCH + dt.timedelta(days=int(d)) for d in day_numbers]


class Timeline:
    """One equipment's rows of a batch, in time order (its groups merged)."""

    def __init__(self, groups: Sequence[Judged]) -> None:
        self._groups = groups
        self._starts = np.cumsum([0] + [len(g) for g in groups[:-1]])
        time_us = np.concatenate([g.time_us for g in groups])
        order = np.argsort(time_us, kind="stable")
        self.order = order
        self.time_us = time_us[order]
        self.flags = np.concatenate([g.anomaly for g in groups])[order]
        self.anomalous = np.flatnonzero(self.flags)  # positions in time order
        # positions not back to normal: flagged, or held by a rule's clear margin
        if any(g.hold is not None for g in groups):
            hold = np.concatenate([g.hold if g.hold is not None else np.zeros(len(g), bool) for g in groups])[order]
            self.blocking = np.flatnonzero(self.flags | hold)
        else:
            self.blocking = self.anomalous

    def __len__(self) -> int:
        return len(self.order)

    def _locate(self, position: int) -> tuple[Judged, int]:
        flat = int(self.order[position])
        k = int(np.searchsorted(self._starts, flat, side="right")) - 1
        return self._groups[k], flat - int(self._starts[k])

    def verdict(self, position: int) -> Verdict:
        """The verdict of the ``position``-th row in time order."""
        group, i = self._locate(position)
        return group.verdict(i)

    def time(self, position: int) -> dt.datetime:
        group, i = self._locate(position)
        return group.times[i]
