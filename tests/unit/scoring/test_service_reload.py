"""Reloads only move forward, whatever order racing management calls finish in."""

from __future__ import annotations

from pathlib import Path

from serve_ml.bundles.catalog import Override
from serve_ml.scoring.service import ScoringService
from tests.conftest import build_sim_bundle


def test_a_reload_for_an_older_generation_changes_nothing(root_copy: Path) -> None:
    build_sim_bundle(root_copy, "press-02", "7.5kW", "1.1.0", power_range_kw=(5.5, 100.0))
    service = ScoringService(root_copy, enable_xgb=False)
    assert service.catalog.live[("press-02", "7.5kW")] == "1.1.0"
    # An activate (generation 7, pin 1.0.0) reloads first; a sync that read
    # generation 6 before it (no override yet) reloads after it.
    service.reload(7, {("press-02", "7.5kW"): Override("1.0.0")})
    report = service.reload(6, {})
    assert service.generation == 7 and not report["live_changes"]
    live = [b for b in service.describe() if b["equipment_id"] == "press-02" and b["power"] == "7.5kW" and b["live"]]
    assert [(b["model_version"], b["pinned"]) for b in live] == [("1.0.0", True)]
    service.reload(8, {})  # a newer state does apply
    assert service.catalog.live[("press-02", "7.5kW")] == "1.1.0" and service.generation == 8
