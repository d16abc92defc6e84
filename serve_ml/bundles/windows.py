"""Windows of consecutive readings, for sequence models, built from a table of rows.

A row's window is the ``steps`` readings of its own unit ending at it, in time order
(file order when there is no time column). Rows too early in their unit's run have
no window and cannot be judged by a sequence model.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from serve_ml.bundles.datasets import Ordering


def window_index(n: int, steps: int, ordering: Ordering | None) -> np.ndarray:
    """``(n, steps)`` row indices of each row's window, oldest first; -1 throughout
    for a row without ``steps - 1`` earlier readings of its unit."""
    units = (np.unique(ordering.unit, return_inverse=True)[1] if ordering is not None and ordering.unit is not None
             else np.zeros(n, dtype=np.int64))
    time = ordering.time if ordering is not None and ordering.time is not None else np.arange(n, dtype=np.float64)
    order = np.lexsort((time, units))
    su = units[order]
    new_run = np.r_[True, su[1:] != su[:-1]]
    run_start = np.flatnonzero(new_run)
    pos_in_run = np.arange(n) - run_start[np.cumsum(new_run) - 1]
    positions = np.arange(n)[:, None] + np.arange(1 - steps, 1)[None, :]
    sorted_windows = np.where((pos_in_run >= steps - 1)[:, None], order[np.clip(positions, 0, n - 1)], -1)
    out = np.empty_like(sorted_windows)
    out[order] = sorted_windows
    return out


def take(columns: Mapping[str, np.ndarray], rows: np.ndarray, win: np.ndarray | None) -> dict[str, np.ndarray]:
    """The ``rows`` of ``columns``: one value per row, or with ``win`` one window per
    row (``(len(rows), steps)``, each row's window ending at it)."""
    if win is None:
        return {f: c[rows] for f, c in columns.items()}
    return {f: c[win[rows]] for f, c in columns.items()}
