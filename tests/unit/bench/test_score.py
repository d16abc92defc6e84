"""``bench score``'s cascade figures measure what they name: the same bundle and
batch, the classifier on every row against only on the rows its gate flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_ml.bench.common import Report
from serve_ml.bench.score import _cascade
from serve_ml.bundles.catalog import Catalog


def test_cascade_figures_compare_the_two_modes_on_a_mostly_healthy_batch(demo_root: Path) -> None:
    rep = Report("t")
    _cascade(rep, Catalog.scan(demo_root).live_bundle("press-02", "7.5kW"), "7.5kW", repeats=1, n=1024)
    names = [f.name for f in rep.figures]
    assert names[0].startswith("classifier always, batch 1024, 2% fault rows (")
    gated = int(names[0].split("(")[1].split()[0])
    assert 20 <= gated < 1024 // 4  # the faults and a few false alarms, not the fleet
    (ratio,) = [f for f in rep.figures if f.unit == "ratio"]  # its size is the benchmark's to tell, not a test's
    assert ratio.runs[0] == pytest.approx(rep.figures[1].median / rep.figures[0].median)
