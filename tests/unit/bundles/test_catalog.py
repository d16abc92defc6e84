"""Version ordering, power-bucket choice and not-found errors that name what exists."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from serve_ml.bundles.catalog import RPM_NM_TO_KW, Catalog, Override
from serve_ml.core.errors import AmbiguousPower, EquipmentNotFound, PowerNotFound, VersionNotFound
from tests.conftest import build_sim_bundle


def cols(torque: list[float], speed: list[float]) -> dict[str, np.ndarray]:
    return {"torque_nm": np.array(torque, float), "speed_rpm": np.array(speed, float)}


def test_newest_pep440_version_is_live(tmp_path: Path) -> None:
    for v in ("1.9.2", "1.10.0", "1.10.0rc1"):
        build_sim_bundle(tmp_path, "m", "7.5kW", v)
    cat = Catalog.scan(tmp_path)
    assert cat.live[("m", "7.5kW")] == "1.10.0"
    assert cat.versions("m", "7.5kW") == ["1.9.2", "1.10.0rc1", "1.10.0"]
    pinned = Catalog.scan(tmp_path, live_overrides={("m", "7.5kW"): Override("1.9.2")})
    assert pinned.live[("m", "7.5kW")] == "1.9.2" and pinned.pinned[("m", "7.5kW")]


def test_unpinned_activation_yields_to_a_newer_version(tmp_path: Path) -> None:
    for v in ("1.0.0", "1.1.0"):
        build_sim_bundle(tmp_path, "m", "7.5kW", v)
    o = Override("1.0.0", pinned=False, newest_at_set="1.1.0")
    assert Catalog.scan(tmp_path, live_overrides={("m", "7.5kW"): o}).live[("m", "7.5kW")] == "1.0.0"
    build_sim_bundle(tmp_path, "m", "7.5kW", "1.2.0")
    assert Catalog.scan(tmp_path, live_overrides={("m", "7.5kW"): o}).live[("m", "7.5kW")] == "1.2.0"
    pinned = Override("1.0.0", pinned=True, newest_at_set="1.1.0")
    assert Catalog.scan(tmp_path, live_overrides={("m", "7.5kW"): pinned}).live[("m", "7.5kW")] == "1.0.0"


def test_invalid_version_directory_is_rejected(root_copy: Path) -> None:
    src = root_copy / "pump-03" / "7.5kW" / "1.0.0"
    shutil.copytree(src, src.parent / "latest")
    cat = Catalog.scan(root_copy)
    assert any("not a PEP 440 version" in r.reason for r in cat.rejected)
    assert ("pump-03", "7.5kW", "1.0.0") in cat.bundles


def test_power_chosen_by_declared_range(demo_root: Path) -> None:
    cat = Catalog.scan(demo_root)
    # 30 Nm x 1500 rpm = 4.7 kW -> 5.5kW class; 42 Nm x 1500 rpm = 6.6 kW -> 7.5kW class
    out = cat.resolve("press-02", None, None, cols([30, 42, 30], [1500, 1500, 1500]), 3)
    got = {b.manifest.power: idx.tolist() for b, idx in out}
    assert got == {"5.5kW": [0, 2], "7.5kW": [1]}
    assert 30 * 1500 * RPM_NM_TO_KW < 5.5 < 42 * 1500 * RPM_NM_TO_KW


def test_power_undecidable_falls_back_to_default(demo_root: Path) -> None:
    cat = Catalog.scan(demo_root)
    out = cat.resolve("pump-03", None, None, {"air_temp_k": np.array([300.0])}, 1)
    assert [(b.manifest.power, idx) for b, idx in out] == [("7.5kW", None)]


def test_power_ambiguous_without_default_names_candidates(demo_root: Path) -> None:
    cat = Catalog.scan(demo_root)
    with pytest.raises(AmbiguousPower) as exc:
        cat.resolve("press-02", None, None, {"air_temp_k": np.array([300.0])}, 1)
    assert exc.value.status_code == 400
    assert "5.5kW, 7.5kW" in exc.value.message and "reading carries no power" in exc.value.message


def test_explicit_power_wins(demo_root: Path) -> None:
    cat = Catalog.scan(demo_root)
    [(b, idx)] = cat.resolve("press-02", "5.5kW", None, cols([42], [1500]), 1)
    assert b.manifest.power == "5.5kW" and idx is None


def test_not_found_errors_name_what_exists(demo_root: Path) -> None:
    cat = Catalog.scan(demo_root)
    with pytest.raises(EquipmentNotFound, match="known: mill-01, press-02, pump-03"):
        cat.get("nope", "7.5kW", None)
    with pytest.raises(PowerNotFound, match="known: 5.5kW, 7.5kW"):
        cat.get("press-02", "11kW", None)
    with pytest.raises(VersionNotFound, match="known: 1.0.0"):
        cat.get("press-02", "7.5kW", "2.0.0")
    assert EquipmentNotFound("x", []).status_code == 404


def test_scan_reuses_unchanged_bundles(root_copy: Path) -> None:
    first = Catalog.scan(root_copy)
    second = Catalog.scan(root_copy, reuse=first.bundles)
    key = ("press-02", "7.5kW", "1.0.0")
    assert second.bundles[key] is first.bundles[key]
