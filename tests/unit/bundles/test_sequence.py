"""The ``lstm_autoencoder`` kind: built from consecutive readings by
``serve-ml bundle build --kind lstm``, loaded with the same checks (shapes, warm-up
replay of recorded windows), scored on windows (the last step's verdict), mixed with
dense gates in one bundle, refused with the number of steps it needs."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.columns import CLASSIFIER_S, score_columns, to_arrays
from serve_ml.bundles.datasets import Ordering
from serve_ml.bundles.kinds.sequence import LstmAutoencoder, SequenceAutoencoder, SequenceAutoencoderKind
from serve_ml.bundles.loader import load_bundle
from serve_ml.bundles.scoring import materialise, score_group
from serve_ml.bundles.simulation import MachineSpec, simulate
from serve_ml.bundles.windows import take, window_index
from serve_ml.cli.main import main
from serve_ml.core.errors import FeatureError

STEPS = 8
FEATURES = ["air_temp_k", "process_temp_k", "vibration_rms_mm_s", "current_a"]


def _series(path: Path, n: int = 1600, seed: int = 0) -> Path:
    """One machine, minute by minute; from row 1,200 on, every other 50-minute stretch
    has a bearing fault (vibration climbing by the minute). Written in reverse, so
    only the time column gives the order."""
    rng = np.random.default_rng(seed)
    cols = simulate(n, spec=MachineSpec.for_power("7.5kW"), profile="normal", rng=rng)
    label = np.full(n, "none", dtype=object)
    for start in range(1200, n, 100):
        ramp = np.linspace(0.5, 3.0, 50)
        cols["vibration_rms_mm_s"][start:start + 50] += ramp[: min(50, n - start)]
        label[start:start + 50] = "bearing"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["minute", *FEATURES, "label"])
        for i in reversed(range(n)):
            w.writerow([i, *(f"{cols[c][i]:.5f}" for c in FEATURES), label[i]])
    return path


def _build(tmp: Path, data: Path, version: str, *extra: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["bundle", "build", "--csv", str(data), "--time-column", "minute", "--equipment-id", "fan-9",
                     "--power", "all", "--model-version", version, "--root", str(tmp / "root"), "--epochs", "6",
                     "--window-steps", str(STEPS), "--no-classifier", "--modality", "thermal=air_temp_k,process_temp_k",
                     "--modality", "motor=vibration_rms_mm_s,current_a", *extra]) == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    tmp = tmp_path_factory.mktemp("seq")
    data = _series(tmp / "series.csv")
    doc = _build(tmp, data, "1.0.0", "--kind", "lstm")
    return Path(doc["path"]), data, doc["metrics"]


def test_window_index_follows_time_per_unit() -> None:
    o = Ordering(time=np.array([3, 1, 2, 1, 2, 4.0]), unit=np.array(["a", "a", "a", "b", "b", "a"]))
    win = window_index(6, 3, o)
    assert win[0].tolist() == [1, 2, 0] and win[5].tolist() == [2, 0, 5]  # a: t1 t2 t3 -> rows 1 2 0
    assert (win[[1, 2, 3, 4]] == -1).all()  # too early in their unit's run (b has only two readings)
    assert take({"x": np.arange(6.0) * 10}, np.array([5]), win)["x"].tolist() == [[20.0, 0.0, 50.0]]


def test_the_builder_trains_calibrates_and_records_windows(built: tuple[Path, Path, dict]) -> None:
    path, _, metrics = built
    manifest = json.loads((path / "manifest.json").read_text())
    for m in manifest["modalities"].values():
        assert m["model"] == {"kind": "lstm_autoencoder", "window_steps": STEPS, "hidden_size": 8, "num_layers": 1,
                              "centre": False}
    warm = json.loads((path / "warmup.json").read_text())
    assert all(len(v) == STEPS for r in warm["rows"] for v in r.values())
    root = path.parents[2]
    cat = Catalog.scan(root)  # loads and replays the warm-up windows
    assert not cat.rejected and ("fan-9", "all", "1.0.0") in cat.bundles
    assert metrics["split"].startswith("time") and metrics["false_alarm_rate"] < 0.1
    assert metrics["detection_rate"] > 0.5, metrics  # a climbing vibration, seen within the window


def test_windows_score_on_the_last_step_and_short_ones_are_refused(built: tuple[Path, Path, dict]) -> None:
    path, _, _ = built
    bundle = load_bundle(path, path.parents[2])
    rng = np.random.default_rng(5)
    normal = simulate(60, spec=MachineSpec.for_power("7.5kW"), profile="normal", rng=rng)
    windows = {f: np.lib.stride_tricks.sliding_window_view(normal[f], STEPS + 4) for f in FEATURES}
    n = len(windows[FEATURES[0]])
    g = score_group(bundle, windows, n, enable_xgb=False)
    last = score_group(bundle, {f: w[:, -STEPS:] for f, w in windows.items()}, n, enable_xgb=False)
    np.testing.assert_allclose(g.score, last.score)  # only the last window_steps steps count
    assert all(r["modalities"]["motor"]["status"] == "scored" for r in materialise(g))
    spiked = {f: w.copy() for f, w in windows.items()}
    spiked["vibration_rms_mm_s"][:, -3:] += 4.0
    assert score_group(bundle, spiked, n, enable_xgb=False).anomaly.mean() > g.anomaly.mean() + 0.5
    with pytest.raises(FeatureError) as exc:
        score_group(bundle, {f: w[:, -3:] for f, w in windows.items()}, n, enable_xgb=False)
    assert f"needs a window of {STEPS} consecutive readings" in exc.value.detail["features"]["motor"]
    assert "got 3" in exc.value.detail["features"]["motor"]
    with pytest.raises(FeatureError, match="needs a window"):
        score_group(bundle, {f: normal[f][:5] for f in FEATURES}, 5, enable_xgb=False)  # single readings
    columns, rows = to_arrays({f: w.tolist() for f, w in windows.items()}, 10_000)
    result = score_columns(Catalog.scan(path.parents[2]), "fan-9", "all", None, columns, rows, enable_xgb=False)
    result.pop(CLASSIFIER_S)
    np.testing.assert_allclose(result["score"], g.score)


def test_dense_and_sequence_gates_share_a_bundle(built: tuple[Path, Path, dict], tmp_path: Path) -> None:
    _, data, _ = built
    doc = _build(tmp_path, data, "2.0.0", "--modality-kind", "motor=lstm")
    manifest = json.loads((Path(doc["path"]) / "manifest.json").read_text())
    kinds = {n: m["model"]["kind"] for n, m in manifest["modalities"].items()}
    assert kinds == {"thermal": "dense_autoencoder", "motor": "lstm_autoencoder"}
    bundle = load_bundle(Path(doc["path"]), tmp_path / "root")
    thermal_only = {f: np.array([300.0, 301.0]) for f in ("air_temp_k", "process_temp_k")}
    (r, _) = materialise(score_group(bundle, thermal_only, 2, enable_xgb=False))  # no window needed for it
    assert r["modalities"]["motor"]["status"] == "absent" and r["modalities"]["thermal"]["status"] == "scored"


def test_evaluate_judges_rows_with_a_whole_window(built: tuple[Path, Path, dict],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path, data, _ = built
    assert main(["bundle", "evaluate", str(path), "--csv", str(data), "--time-column", "minute", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows_without_a_full_window"] == STEPS - 1 and report["rows"] == 1600 - (STEPS - 1)
    assert report["gate"]["recall"] > 0.5


def test_loader_checks_sequence_weights_against_the_declared_shape() -> None:
    spec = SequenceAutoencoder(window_steps=5, hidden_size=6)
    shapes = SequenceAutoencoderKind().expected_shapes(3, spec)
    assert shapes == {k: tuple(v.shape) for k, v in LstmAutoencoder(3, spec).state_dict().items()}
    assert shapes["encoder.weight_ih_l0"] == (24, 3) and shapes["output.weight"] == (3, 6)
