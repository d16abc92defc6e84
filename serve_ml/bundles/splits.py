"""Which rows train, calibrate and judge a bundle's models.

At random by default; in consecutive blocks of time with a time column; by whole
units (machines) with a unit column, which run-to-failure data needs: a unit's rows
are strongly alike, and a model judged on rows of units it learnt looks better than
it will be on the next machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from serve_ml.bundles.datasets import Ordering

Split = Literal["random", "time", "unit"]


class SplitSpec(Protocol):
    """What a split reads of the build spec."""

    @property
    def split(self) -> Split: ...

    @property
    def seed(self) -> int: ...

    @property
    def normal_label(self) -> str: ...


@dataclass(frozen=True)
class Rows:
    """Which rows play which part: normal rows train / calibrate / test the gates,
    fault rows train / test them. The classifier learns ``clf_train``: every
    labelled row on a random split (its figures are out of fold); the rows before
    the evaluation block on a time or unit split, where ``clf_test`` (the evaluation
    block's labelled rows) gives its figures on later data, at the natural balance.
    ``groups`` keeps the classifier's folds to consecutive time or whole units."""

    normal: np.ndarray
    faulty: np.ndarray
    train: np.ndarray
    calib: np.ndarray
    test: np.ndarray
    fault_train: np.ndarray
    fault_test: np.ndarray
    clf_train: np.ndarray
    clf_test: np.ndarray
    groups: np.ndarray | None = None
    part: np.ndarray | None = None  # each row's block on a time or unit split: 0 train, 1 calibration, 2 evaluation

    def only(self, keep: np.ndarray) -> Rows:
        """The same parts restricted to rows where ``keep`` (a per-row mask) holds."""
        def k(a: np.ndarray) -> np.ndarray:
            return a[keep[a]]

        return Rows(k(self.normal), k(self.faulty), k(self.train), k(self.calib), k(self.test), k(self.fault_train),
                    k(self.fault_test), k(self.clf_train), k(self.clf_test),
                    None if self.groups is None else self.groups[keep[self.clf_train]], self.part)


def _splits(n: int, rng: np.random.Generator, fractions: tuple[float, ...]) -> list[np.ndarray]:
    idx = rng.permutation(n)
    cuts = np.cumsum([int(round(f * n)) for f in fractions[:-1]])
    return np.split(idx, cuts)


def split_rows(spec: SplitSpec, labels: np.ndarray, ordering: Ordering | None) -> Rows:
    rng = np.random.default_rng(spec.seed)
    is_normal = labels == spec.normal_label
    is_fault = ~is_normal & (labels != "unknown")
    normal, faulty = np.flatnonzero(is_normal), np.flatnonzero(is_fault)
    if spec.split == "random":
        tr, cal, te = (normal[s] for s in _splits(len(normal), rng, (0.7, 0.15, 0.15)))
        ftr, fte = (faulty[s] for s in _splits(len(faulty), rng, (0.6, 0.4)))
        return Rows(normal, faulty, tr, cal, te, ftr, fte, np.concatenate([normal, faulty]), np.array([], int))
    part, groups = _blocks(spec, len(labels), ordering, rng)
    labelled = is_normal | is_fault
    tr, cal, te = (np.flatnonzero(is_normal & (part == b)) for b in (0, 1, 2))
    return Rows(normal, faulty, tr, cal, te, np.flatnonzero(is_fault & (part < 2)), np.flatnonzero(is_fault & (part == 2)),
                 np.flatnonzero(labelled & (part < 2)), np.flatnonzero(labelled & (part == 2)),
                 groups[labelled & (part < 2)], part)


def split_name(spec: SplitSpec, ordering: Ordering | None) -> str:
    if spec.split == "time":
        return f"time: consecutive blocks of {ordering.time_column!r}"  # type: ignore[union-attr]
    if spec.split == "unit":
        return f"unit: whole units of {ordering.unit_column!r}"  # type: ignore[union-attr]
    return "random"


def _blocks(spec: SplitSpec, n: int, ordering: Ordering | None,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each row's part (0 train, 1 calibration, 2 evaluation) and its fold group."""
    if spec.split == "time":
        if ordering is None or ordering.time is None:
            raise ValueError("a time split needs a time column (--time-column)")
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(ordering.time, kind="stable")] = np.arange(n)
        return np.searchsorted([int(round(0.7 * n)), int(round(0.85 * n))], rank, side="right"), rank
    if ordering is None or ordering.unit is None:
        raise ValueError("a unit split needs a unit column (--unit-column)")
    units, unit_of = np.unique(ordering.unit, return_inverse=True)
    if len(units) < 3:
        raise ValueError(f"a unit split needs at least 3 units (train, calibration, evaluation); "
                         f"{ordering.unit_column!r} has {len(units)}")
    order = rng.permutation(len(units))
    n_train = min(max(1, int(round(0.7 * len(units)))), len(units) - 2)
    n_calib = max(1, min(int(round(0.15 * len(units))), len(units) - n_train - 1))
    unit_part = np.empty(len(units), dtype=np.int64)
    unit_part[order] = np.searchsorted([n_train, n_train + n_calib], np.arange(len(units)), side="right")
    return unit_part[unit_of], unit_of
