"""Splits that respect time: with a time column the gates train, calibrate and are
judged on consecutive blocks, so a sensor that drifts shows the false alarms a later
stretch will see; with a unit column whole machines are held out; the classifier's
folds keep to consecutive time or whole units and its figures come from the block it
never saw."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from serve_ml.bundles.builder import BuildSpec
from serve_ml.bundles.datasets import DatasetError, Ordering, read_ordering
from serve_ml.bundles.fault_classifier import group_folds
from serve_ml.bundles.simulation import MachineSpec, simulate
from serve_ml.bundles.splits import split_rows
from serve_ml.cli.main import main

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _drifting_csv(path: Path, n: int = 3000, seed: int = 0) -> Path:
    """One machine over ``n`` minutes: its process temperature creeps up 4 K over the file
    (a slow drift no fault causes); every 40th row is an overstrain fault. Rows are
    written shuffled, so only the time column knows the order."""
    rng = np.random.default_rng(seed)
    spec = MachineSpec.for_power("7.5kW")
    normal = simulate(n, spec=spec, profile="normal", rng=rng)
    fault = simulate(n, spec=spec, profile="overstrain", rng=rng)
    drift = np.linspace(0.0, 4.0, n)
    is_fault = np.arange(n) % 40 == 7
    names = ["air_temp_k", "process_temp_k", "speed_rpm", "torque_nm", "tool_wear_min"]
    rows = []
    for i in range(n):
        src = fault if is_fault[i] else normal
        # overstrain is mechanical: a fault row keeps the machine's own temperatures
        values = [(normal if f.endswith("temp_k") else src)[f][i] + (drift[i] if f == "process_temp_k" else 0.0)
                  for f in names]
        rows.append([(T0 + dt.timedelta(minutes=i)).isoformat(), *[f"{v:.4f}" for v in values],
                     "overstrain" if is_fault[i] else "none"])
    rng.shuffle(rows)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ts", *names, "label"])
        w.writerows(rows)
    return path


def _build(root: Path, csv_path: Path, version: str, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    assert main(["bundle", "build", "--csv", str(csv_path), "--equipment-id", "mill-7", "--power", "all",
                 "--model-version", version, "--root", str(root), "--epochs", "6", "--classifier-rounds", "30",
                 "--modality", "thermal=air_temp_k,process_temp_k", *extra]) == 0
    return json.loads(capsys.readouterr().out)["metrics"]


def test_a_time_split_reports_the_false_alarms_of_a_later_stretch(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = _drifting_csv(tmp_path / "drift.csv")
    shuffled = _build(tmp_path / "root", data, "1.0.0", capsys)
    timed = _build(tmp_path / "root", data, "1.0.1", capsys, "--time-column", "ts")
    assert shuffled["split"] == "random" and timed["split"] == "time: consecutive blocks of 'ts'"
    # At random the held-out rows come from the same stretch the gate learnt: few alarms.
    assert shuffled["false_alarm_rate"] < 0.03, shuffled
    # In time order the gate meets temperatures it never saw: the figure a user will live with.
    assert timed["false_alarm_rate"] > 5 * max(shuffled["false_alarm_rate"], 0.01), (shuffled, timed)
    # The classifier's own figure comes from the last block, at the file's natural balance.
    assert timed["classifier_test_rows"].startswith("450 ")  # 15 % of 3,000 rows
    assert "folds of consecutive time" in timed["classifier_eval"]
    assert 0.0 <= timed["classifier_test_f1_failure_vs_none"] <= 1.0


def test_time_blocks_are_consecutive_and_cover_every_row() -> None:
    rng = np.random.default_rng(1)
    n = 1000
    times = rng.permutation(n).astype(float)
    labels = np.where(rng.random(n) < 0.1, "osf", "none")
    spec = BuildSpec(equipment_id="m", power="p", model_version="1", power_range_kw=(0, 1),
                     modalities={"a": ["x"]}, split="time")
    rows = split_rows(spec, labels, Ordering(time=times, time_column="t"))
    blocks = [np.concatenate([rows.train, rows.fault_train[times[rows.fault_train] < times[rows.calib].min()]]),
              rows.calib, np.concatenate([rows.test, rows.fault_test])]
    assert times[blocks[0]].max() < times[blocks[1]].min() and times[blocks[1]].max() < times[blocks[2]].min()
    assert len(rows.train) + len(rows.calib) + len(rows.test) == int(np.sum(labels == "none"))
    assert len(rows.fault_train) + len(rows.fault_test) == int(np.sum(labels == "osf"))
    assert sorted(np.concatenate([rows.clf_train, rows.clf_test]).tolist()) == list(range(n))
    assert times[rows.clf_train].max() < times[rows.clf_test].min()
    # the classifier's folds are stretches of time too
    folds = group_folds(rows.groups, 5)
    spans = sorted((times[rows.clf_train][f].min(), times[rows.clf_train][f].max()) for f in folds)
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_a_unit_split_holds_out_whole_units() -> None:
    units = np.repeat([f"u{i}" for i in range(20)], 50)
    labels = np.where(np.arange(1000) % 50 >= 45, "failing", "none")
    spec = BuildSpec(equipment_id="m", power="p", model_version="1", power_range_kw=(0, 1),
                     modalities={"a": ["x"]}, split="unit")
    rows = split_rows(spec, labels, Ordering(unit=units, unit_column="engine"))
    # (the classifier also learns the calibration units' faults: fault_train is every fault before the last block)
    parts = [set(units[np.concatenate(p)].tolist()) for p in ([rows.train], [rows.calib], [rows.test, rows.fault_test])]
    assert not (parts[0] & parts[1]) and not (parts[1] & parts[2]) and not (parts[0] & parts[2])
    assert [len(p) for p in parts] == [14, 3, 3]
    for fold in group_folds(rows.groups, 5):  # no unit in two folds
        inside = set(units[rows.clf_train][fold].tolist())
        outside = set(units[rows.clf_train].tolist()) - inside
        assert inside and not inside & outside
    with pytest.raises(ValueError, match="at least 3 units"):
        split_rows(spec, labels[:100], Ordering(unit=units[:100], unit_column="engine"))
    with pytest.raises(ValueError, match="needs a unit column"):
        split_rows(spec, labels, None)


def test_ordering_columns_are_read_and_bad_ones_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "o.csv"
    path.write_text("cycle;engine;when;x\n1;a;2026-01-01T00:00:00;1\n2;b;2026-01-01 00:00:30+00:00;2\n")
    o = read_ordering(path, time_column="when", unit_column="engine")
    assert o.time.tolist() == [T0.replace(month=1).timestamp(), T0.replace(month=1).timestamp() + 30]
    assert o.unit.tolist() == ["a", "b"]
    assert read_ordering(path, time_column="cycle").time.tolist() == [1.0, 2.0]
    with pytest.raises(DatasetError, match="no --time-column 'tick'"):
        read_ordering(path, time_column="tick")
    with pytest.raises(DatasetError, match=r"column 'engine' row 2: 'a' is neither a number nor an ISO-8601"):
        read_ordering(path, time_column="engine")
    rc = main(["bundle", "build", "--csv", str(path), "--equipment-id", "m", "--power", "all", "--model-version",
               "1", "--root", str(tmp_path / "r"), "--modality", "a=x", "--split", "unit"])
    assert rc == 2 and "--split unit needs --unit-column" in capsys.readouterr().err
