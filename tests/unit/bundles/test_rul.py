"""Remaining useful life: run-to-failure trajectories from the simulator, a RUL head
trained by ``serve-ml bundle build --rul`` and judged on units it never saw, served on
every path with an interval, checked at load and at warm-up like every model."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from serve_ml.bundles.builder import BuildSpec
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.columns import CLASSIFIER_S, score_columns
from serve_ml.bundles.datasets import Ordering
from serve_ml.bundles.loader import load_bundle
from serve_ml.bundles.rul_training import DEGRADING, RulSpec, nasa_score, rul_labels, rul_target
from serve_ml.bundles.run_to_failure import MODES, REGIMES, simulate_fleet, write_csv
from serve_ml.bundles.scoring import materialise, score_group
from serve_ml.bundles.warmup import verify_warmup
from serve_ml.cli.main import main
from serve_ml.core.errors import BundleInvalid
from tests.samples import sim_rows


def test_trajectories_degrade_faster_towards_failure_in_every_mode() -> None:
    fleet = simulate_fleet(8, seed=3)
    assert set(fleet.failure_mode.tolist()) == set(MODES) and set(fleet.regime.tolist()) == set(range(len(REGIMES)))
    for unit, life in fleet.life.items():
        rows = fleet.unit == unit
        assert fleet.cycle[rows].tolist() == list(range(1, life + 1))
        mode = fleet.failure_mode[rows][0]
        signal = (fleet.sensors["vibration_rms_mm_s"] if mode == "bearing"
                  else fleet.sensors["process_temp_k"] - fleet.sensors["air_temp_k"])[rows]
        q = life // 4
        first, second, last = signal[:q].mean(), signal[q:2 * q].mean(), signal[-q:].mean()
        assert last - second > 2 * (second - first) > 0 or last - second > 1.0, (unit, mode, first, second, last)
    rul = fleet.rul(cap=125)
    assert rul.max() == 125 and rul.min() == 0


def test_target_and_labels_come_from_each_units_last_time() -> None:
    o = Ordering(time=np.array([1, 2, 3, 1, 2.0]), unit=np.array(["a", "a", "a", "b", "b"]))
    assert rul_target(o).tolist() == [2, 1, 0, 1, 0]
    labels = rul_labels(np.array(["none", "none", "bearing", "none", "none"]), np.array([200, 10, 0, 130, 5.0]),
                        RulSpec(cap=125), "none")
    assert labels.tolist() == ["none", DEGRADING, "bearing", "none", DEGRADING]
    with pytest.raises(ValueError, match="needs run-to-failure data"):
        rul_target(Ordering(time=np.array([1.0])))
    assert nasa_score(np.array([10.0]), np.array([0.0])) > nasa_score(np.array([0.0]), np.array([10.0])) > 0


def test_a_rul_head_needs_the_unit_split() -> None:
    with pytest.raises(ValidationError, match="needs split 'unit'"):
        BuildSpec(equipment_id="e", power="p", model_version="1", power_range_kw=(0, 1), modalities={"a": ["x"]},
                  rul=RulSpec(), split="time")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    tmp = tmp_path_factory.mktemp("rtf")
    train = write_csv(simulate_fleet(24, seed=1, min_life=120, max_life=220), tmp / "train.csv")
    test = write_csv(simulate_fleet(6, seed=2, min_life=120, max_life=220), tmp / "test.csv")
    argv = ["bundle", "build", "--csv", str(train), "--unit-column", "unit", "--time-column", "cycle", "--rul",
            "--rul-alert-below", "30", "--label-column", "failure_mode", "--equipment-id", "rtf-1", "--power", "all",
            "--model-version", "1.0.0", "--root", str(tmp / "root"), "--epochs", "8"]
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    doc = json.loads(out.getvalue())
    return Path(doc["path"]), doc["metrics"], test


def test_the_builder_trains_and_judges_the_head_on_units_it_never_saw(built: tuple[Path, dict, Path]) -> None:
    path, metrics, _ = built
    head = json.loads((path / "manifest.json").read_text())["rul"]
    assert head["kind"] == "xgboost_rul" and head["unit"] == "cycles" and head["cap"] == 125.0
    assert head["alert_below"] == 30.0 and head["interval"]["lower"] <= 0 <= head["interval"]["upper"]
    assert "regime" in head["features"]  # the operating setting: the simulator's file has one
    assert metrics["split"] == "unit: whole units of 'unit'" and "never saw" in metrics["rul_eval"]
    # A capped target runs 0..125: a useless constant guess sits near 45 RMSE here.
    assert metrics["rul_rmse"] < 25, metrics
    assert 0.4 <= metrics["rul_interval_coverage"] <= 1.0
    assert metrics["classifier_test_f1_failure_vs_none"] > 0.6  # degrading vs healthy, by mode


def test_evaluate_prints_rul_figures(built: tuple[Path, dict, Path], capsys: pytest.CaptureFixture[str]) -> None:
    path, _, test = built
    base = ["bundle", "evaluate", str(path), "--csv", str(test), "--label-column", "failure_mode",
            "--unit-column", "unit", "--time-column", "cycle"]
    assert main([*base, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rul"]["rows"] == report["rows"] and report["rul"]["rmse"] < 25
    assert report["rul"]["below_cap"]["rows"] < report["rows"]
    assert main(base) == 0
    assert "RUL (cycles, cap 125.0)" in capsys.readouterr().out


def test_every_path_answers_the_rul_with_its_interval(built: tuple[Path, dict, Path]) -> None:
    path, _, _ = built
    root = path.parents[2]
    bundle = load_bundle(path, root)
    fleet = simulate_fleet(2, seed=9, min_life=150, max_life=150)
    cols = {f: fleet.sensors[f] for f in bundle.rul.spec.features if f in fleet.sensors}
    cols["regime"] = fleet.regime.astype(float)
    n = len(fleet.unit)
    g = score_group(bundle, cols, n, enable_xgb=True)
    rows = materialise(g)
    values = np.array([r["rul"]["value"] for r in rows])
    assert all(r["rul"]["lower"] <= r["rul"]["value"] <= r["rul"]["upper"] for r in rows)
    assert values.min() >= 0 and values.max() <= 125 and {r["rul"]["unit"] for r in rows} == {"cycles"}
    truth = fleet.rul(cap=125)
    assert np.sqrt(np.mean((values - truth) ** 2)) < 30
    assert values[truth < 20].mean() < values[truth >= 125].mean() - 50  # it sees the end coming
    result = score_columns(Catalog.scan(root), "rtf-1", "all", None, cols, n, enable_xgb=True)
    result.pop(CLASSIFIER_S)
    np.testing.assert_allclose(result["rul"]["value"], values)
    assert result["rul"]["unit"] == "cycles"
    thermal = {f: cols[f] for f in ("air_temp_k", "process_temp_k")}  # no mechanical modality, no RUL inputs
    assert {r["rul"] is None for r in materialise(score_group(bundle, thermal, n, enable_xgb=True))} == {True}


def _rewrite(path: Path, name: str, edit) -> None:
    doc = json.loads((path / name).read_text())
    edit(doc)
    (path / name).write_text(json.dumps(doc))
    manifest = json.loads((path / "manifest.json").read_text())
    if name != "manifest.json":
        manifest["files"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
        (path / "manifest.json").write_text(json.dumps(manifest))


def test_load_and_warm_up_check_the_head(built: tuple[Path, dict, Path], tmp_path: Path) -> None:
    path, _, _ = built
    copy = shutil.copytree(path, tmp_path / "rtf-1" / "all" / "1.0.0")
    verify_warmup(load_bundle(copy, tmp_path))  # as built: it reproduces its recorded RULs
    assert any("rul" in e for e in json.loads((copy / "warmup.json").read_text())["expected"])

    _rewrite(copy, "warmup.json", lambda d: d["expected"][0].update(rul=d["expected"][0]["rul"] + 7.0))
    with pytest.raises(BundleInvalid, match="row 0 RUL"):
        verify_warmup(load_bundle(copy, tmp_path))

    _rewrite(copy, "manifest.json", lambda d: d["rul"].update(features=d["rul"]["features"][:-1]))
    with pytest.raises(BundleInvalid, match="rul.json: .* expects 7 features but the manifest lists 6"):
        load_bundle(copy, tmp_path)


def test_build_refuses_rul_without_run_to_failure_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = write_csv(simulate_fleet(3, seed=1, min_life=20, max_life=30), tmp_path / "f.csv")
    assert main(["bundle", "build", "--csv", str(csv_path), "--rul", "--unit-column", "unit", "--equipment-id", "e",
                 "--power", "all", "--model-version", "1", "--root", str(tmp_path / "r")]) == 2
    assert "--rul needs run-to-failure data: --unit-column and --time-column" in capsys.readouterr().err


def test_a_full_reading_gets_a_rul_whatever_the_classifier_setting(rul_root: Path) -> None:
    cat = Catalog.scan(rul_root)
    bundle = cat.bundles[("press-02", "7.5kW", "1.0.0")]
    row = sim_rows("normal", 1)[0]
    (r,) = materialise(score_group(bundle, {k: np.array([v]) for k, v in row.items()}, 1, enable_xgb=False))
    assert r["rul"]["value"] >= 0 and r["classifier"]["status"] == "skipped"
