"""The builder is deterministic for a seed, atomic, and refuses to overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serve_ml.bundles.loader import load_bundle
from tests.conftest import build_sim_bundle


def test_same_seed_same_bundle(tmp_path: Path) -> None:
    a = build_sim_bundle(tmp_path / "a", "m", "7.5kW", "1.0.0", seed=5)
    b = build_sim_bundle(tmp_path / "b", "m", "7.5kW", "1.0.0", seed=5)
    for name in ("thermal.pt", "mechanical.pt", "xgb.json", "warmup.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    ma["provenance"].pop("trained_at"), mb["provenance"].pop("trained_at")
    assert ma == mb


def test_build_is_atomic_and_validates(tmp_path: Path) -> None:
    path = build_sim_bundle(tmp_path, "m", "7.5kW", "1.0.0", classifier=False)
    assert not (tmp_path / ".staging").exists()
    b = load_bundle(path, tmp_path)
    m = b.manifest
    assert m.classifier is None and m.warmup is not None
    assert 0 <= m.provenance.metrics["false_alarm_rate"] <= 1
    assert all(t > 0 for t in (mod.threshold for mod in b.modalities.values()))


def test_existing_version_is_never_overwritten(tmp_path: Path) -> None:
    build_sim_bundle(tmp_path, "m", "7.5kW", "1.0.0")
    with pytest.raises(FileExistsError, match="immutable"):
        build_sim_bundle(tmp_path, "m", "7.5kW", "1.0.0")


def test_demo_provenance_reports_classifier_f1(demo_root: Path) -> None:
    m = json.loads((demo_root / "mill-01" / "7.5kW" / "1.0.0" / "manifest.json").read_text())
    assert "AI4I" in m["provenance"]["data"]
    assert 0 < m["provenance"]["metrics"]["classifier_f1_failure_vs_none"] <= 1
