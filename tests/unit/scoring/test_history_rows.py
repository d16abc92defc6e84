"""What a sync records in ``serve_ml_models`` for the bundles a scan saw."""

from __future__ import annotations

from pathlib import Path

from serve_ml.bundles.catalog import Catalog
from serve_ml.scoring.history import catalog_rows
from tests.conftest import DEMO_ROOT


def test_a_bundle_directory_linked_outside_the_root_is_recorded_as_rejected(root_copy: Path, tmp_path: Path) -> None:
    link = root_copy / "press-02" / "7.5kW" / "1.0.0"
    real = tmp_path / "elsewhere"
    link.rename(real)
    link.symlink_to(real)
    rows = catalog_rows(Catalog.scan(root_copy))  # raised ValueError (a 500 on sync) before
    rejected = [r for r in rows if r[4] == "rejected"]
    assert [r[:3] for r in rejected] == [("press-02", "7.5kW", "1.0.0")]
    assert "link pointing outside the root" in (rejected[0][5] or "")
    assert sum(r[4] in ("live", "loaded") for r in rows) == len(list(DEMO_ROOT.glob("*/*/*"))) - 1
