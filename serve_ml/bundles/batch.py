"""Score many readings in one call: the single entry point for HTTP and the stream.

Readings are grouped by (identity, feature names) so that each group is scored with
a few vectorised calls; results come back in input order, one per reading, each
either a verdict dict or the ServeMLError that explains why that reading failed.
One bad reading never fails the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import chain, count, repeat
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

import numpy as np

from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.loader import Bundle
from serve_ml.bundles.scoring import FAULT_MISSING, GroupScore, Result, materialise, score_group
from serve_ml.core.errors import FeatureError, ServeMLError


class Reading(NamedTuple):
    """One reading to score. A named tuple: the stream builds tens of thousands a
    second, and a frozen dataclass costs three times as much to construct."""

    equipment_id: str
    features: Mapping[str, float]
    power: str | None = None
    model_version: str | None = None


_EQ, _FEATURES, _POWER, _VERSION = (itemgetter(i) for i in range(4))  # Reading's field order


class ReadingColumns(NamedTuple):
    """Many readings as four parallel lists. Built with C-level ``map`` calls, so a
    bulk request becomes scorable groups without a Python line per reading."""

    equipment_ids: list[str]
    powers: list[str | None]
    versions: list[str | None]
    features: list[Mapping[str, float]]

    @property
    def n(self) -> int:
        return len(self.equipment_ids)

    @classmethod
    def of_readings(cls, readings: Sequence[Reading]) -> ReadingColumns:
        return cls(list(map(_EQ, readings)), list(map(_POWER, readings)), list(map(_VERSION, readings)),
                   list(map(_FEATURES, readings)))

    @classmethod
    def of_dicts(cls, items: Sequence[Mapping[str, Any]]) -> ReadingColumns:
        """From JSON reading objects; ``power`` and ``model_version`` may be absent."""
        get = dict.get
        return cls(list(map(itemgetter("equipment_id"), items)), list(map(get, items, repeat("power"))),  # type: ignore[arg-type]
                   list(map(get, items, repeat("model_version"))), list(map(itemgetter("features"), items)))  # type: ignore[arg-type]

    def take(self, idx: Sequence[int]) -> ReadingColumns:
        """The readings at positions ``idx``, in that order."""
        return ReadingColumns(*(list(map(col.__getitem__, idx)) for col in self))  # type: ignore[arg-type]


class History(Protocol):
    """Past readings, for bundles with sequence modalities (the stream keeps them)."""

    def windows(self, bundle: Bundle, rows: list[int],
                columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """For the readings at input positions ``rows``, scored by ``bundle`` (their
        values in ``columns``): a mask of those with a whole window of readings behind
        them, and those rows' windows (rows x steps, oldest first)."""
        ...


class Screen(Protocol):
    """A data-quality gate (the stream keeps one): which values of a group are not
    measurements (a flatlined or out-of-range sensor)."""

    def __call__(self, equipment_id: str, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per feature with a fault in ``columns`` (rows in time order), an int8 fault
        code per row (``scoring.FAULT_*``; 0: none)."""
        ...


def score_groups(catalog: Catalog, readings: Sequence[Reading] | ReadingColumns, *,
                 enable_xgb: bool, history: History | None = None, screen: Screen | None = None
                 ) -> Iterator[tuple[list[int], GroupScore | ServeMLError]]:
    """Group the readings and score each group with a few vectorised calls. Yields
    ``(input positions, column-oriented result)``, or the error that fails all of
    those positions (unknown equipment, power, version or feature names). With a
    ``history``, readings for a bundle with sequence modalities are scored on their
    windows; those whose window is not whole yet are scored without those
    modalities (``absent``). With a ``screen``, faulted values are kept out of the
    modalities they feed, and every group carries its sensor faults (``faults``)."""
    cols = readings if isinstance(readings, ReadingColumns) else ReadingColumns.of_readings(readings)
    for (eq, power, version, names), (idx, order) in _groups(cols).items():
        try:
            if names and isinstance(cols.features[idx[0]][names[0]], list):
                columns = _windows(cols.features, idx, names)
            else:
                matrix = _matrix(cols.features, idx, names, order)
                columns = {f: np.ascontiguousarray(matrix[:, j]) for j, f in enumerate(names)}
            parts = []
            for bundle, sub in catalog.resolve(eq, power, version, columns, len(idx)):
                rows = idx if sub is None else list(map(idx.__getitem__, sub.tolist()))
                cols_ = columns if sub is None else {f: c[sub] for f, c in columns.items()}
                faults = screen(eq, cols_) if screen is not None else {}
                invalid = {f: c > 0 for f, c in faults.items()} or None
                if history is None or all(m.input == "rows" for m in bundle.modalities.values()):
                    parts.append((rows, _with_inputs(score_group(bundle, cols_, len(rows), enable_xgb=enable_xgb,
                                                                 invalid=invalid), cols_, faults, screen)))
                    continue
                full, wins = history.windows(bundle, rows, cols_)
                if full.any():
                    parts.append(([r for r, f in zip(rows, full.tolist(), strict=True) if f],
                                  _with_inputs(score_group(bundle, wins, int(full.sum()), enable_xgb=enable_xgb,
                                                           invalid=_take(invalid, full)),
                                               {f: c[full] for f, c in cols_.items()}, _take(faults, full),
                                               screen)))
                if not full.all():
                    short = {f: c[~full] for f, c in cols_.items()}
                    parts.append(([r for r, f in zip(rows, full.tolist(), strict=True) if not f],
                                  _with_inputs(score_group(bundle, short, int((~full).sum()),
                                                           enable_xgb=enable_xgb, short_windows="absent",
                                                           invalid=_take(invalid, ~full)),
                                               short, _take(faults, ~full), screen)))
        except ServeMLError as exc:
            yield idx, exc
            continue
        yield from parts


def _with_inputs(g: GroupScore, inputs: dict[str, np.ndarray], faults: Mapping[str, np.ndarray] | None = None,
                 screen: Screen | None = None) -> GroupScore:
    g.inputs = inputs
    if screen is not None:  # the stream's gate: sensors a modality missed are faults too
        out = {f: c for f, c in (faults or {}).items() if c.any()}
        for m in g.modalities:
            for f in m.missing:
                out[f] = np.full(g.n, FAULT_MISSING, dtype=np.int8)
        g.faults = out
    return g


def _take(masks: Mapping[str, np.ndarray] | None, rows: np.ndarray) -> dict[str, np.ndarray] | None:
    return None if masks is None else {f: m[rows] for f, m in masks.items()}


def _groups(cols: ReadingColumns) -> dict[tuple[Any, ...], tuple[list[int], tuple[str, ...] | None]]:
    """Positions by (identity, sorted feature names), groups in order of first
    appearance, each with the order its readings all wrote their names in (None
    when they did not all write the same). Keyed first by the names in the order
    they came (one producer writes them in one order), then merged by the sorted
    names: a sort per group, not per reading. The per-reading steps (key, group id,
    positions) are C-level calls."""
    n = cols.n
    keys = zip(cols.equipment_ids, cols.powers, cols.versions, map(tuple, cols.features), strict=True)
    # Each key's id is the position of its first reading: one dict operation per reading.
    first: dict[tuple[Any, ...], int] = {}
    ids = np.fromiter(map(first.setdefault, keys, count()), np.intp, n)
    if len(first) <= 1:
        parts: list[list[int]] = [list(range(n))] if n else []
    else:
        order = np.argsort(ids, kind="stable")
        parts = [p.tolist() for p in np.split(order, np.flatnonzero(np.diff(ids[order])) + 1)]
    groups: dict[tuple[Any, ...], tuple[list[int], tuple[str, ...] | None]] = {}
    for (eq, power, version, names), idx in zip(first, parts, strict=True):
        key = (eq, power, version, tuple(sorted(names)))
        if key in groups:  # the same names in another order: keep input order
            groups[key] = (sorted(groups[key][0] + idx), None)
        else:
            groups[key] = (idx, names)
    return groups


def _matrix(features: Sequence[Mapping[str, float]], idx: list[int], names: tuple[str, ...],
            order: tuple[str, ...] | None = None) -> np.ndarray:
    """The group's values as a rows x features matrix (columns in ``names`` order):
    one itemgetter call (C) per reading instead of a dict lookup per feature,
    flattened straight into the array. When every reading's dict holds its names in
    ``order``, its values are read in that order with no lookup at all (a third less
    CPU), and the columns put in place after. No names (``features: {}``): an empty
    matrix, for the feature check to refuse with its own message."""
    if not names:
        return np.empty((len(idx), 0))
    if order is not None:
        try:
            flat = np.fromiter(chain.from_iterable(map(dict.values, map(features.__getitem__, idx))),  # type: ignore[arg-type]
                               np.float64, len(idx) * len(order)).reshape(len(idx), len(order))
            return flat if order == names else flat[:, [order.index(f) for f in names]]
        except TypeError:  # not all dicts (or a value that is no number: refused below, as ever)
            pass
    row = itemgetter(*names)
    values = map(row, map(features.__getitem__, idx))
    if len(names) > 1:  # itemgetter of one name gives the value, not a 1-tuple
        values = chain.from_iterable(values)  # type: ignore[assignment]
    return np.fromiter(values, np.float64, len(idx) * len(names)).reshape(len(idx), len(names))


_RAGGED = "a window needs the same number of numeric values for every feature"


def _windows(features: Sequence[Mapping[str, Any]], idx: list[int], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Readings that each carry a window (a list of values per feature, oldest first,
    as ``POST /predict`` with ``readings`` sends them): rows x steps per feature. Windows
    of different lengths keep their newest ``shortest`` steps (every part of a bundle
    reads a window from its end)."""
    try:
        k = min(len(features[i][names[0]]) for i in idx)
        out = {f: np.array([features[i][f][-k:] for i in idx], dtype=np.float64) for f in names}
    except (TypeError, ValueError):
        raise FeatureError({"readings": _RAGGED}) from None
    steps = {c.shape[1] if c.ndim == 2 else -1 for c in out.values()}
    if len(steps) != 1 or -1 in steps:
        raise FeatureError({"readings": _RAGGED})
    return out


def score_readings(catalog: Catalog, readings: Sequence[Reading], *, enable_xgb: bool) -> list[Result]:
    """One JSON-ready verdict dict (or the ServeMLError explaining the failure) per
    reading, in input order."""
    return in_order(len(readings), score_groups(catalog, readings, enable_xgb=enable_xgb))


def in_order(n: int, scored: Iterable[tuple[list[int], GroupScore | ServeMLError]]) -> list[Result]:
    """``score_groups``' output as one verdict dict (or error) per reading, in input order."""
    out: list[Result | None] = [None] * n
    for idx, g in scored:
        if isinstance(g, ServeMLError):
            for i in idx:
                out[i] = g
        else:
            for pos, res in zip(idx, materialise(g), strict=True):
                out[pos] = res
    return out  # type: ignore[return-value]
