"""A bundle with no gate, only a classifier: built, loaded, and answered alike on
every path (the verdict dicts HTTP sends, the stream's stored rows, predict, bulk and
columns over the in-process API), whether or not SERVE_ML_ENABLE_XGB is set."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from serve_ml.bundles.batch import Reading, score_readings
from serve_ml.bundles.builder import BuildSpec, build_bundle
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.demo import TORQUE_SPEED
from serve_ml.bundles.manifest import Manifest
from serve_ml.bundles.simulation import MECHANICAL, THERMAL, MachineSpec, simulate_dataset
from serve_ml.core.errors import FeatureError
from serve_ml.core.settings import Settings
from serve_ml.deployments.local import create_local_app
from serve_ml.pipelines.encode import Origin, encode_scored
from serve_ml.pipelines.verdicts import all_verdicts
from tests.stored_rows import T0, rows_from_verdicts

API = "/api/v1/serve-ml"
FEATURES = [*THERMAL, *MECHANICAL]


@pytest.fixture(scope="module")
def data() -> tuple[dict[str, np.ndarray], np.ndarray]:
    return simulate_dataset(800, 60, spec=MachineSpec.for_power("7.5kW"), seed=4)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, data: tuple[dict[str, np.ndarray], np.ndarray]) -> Path:
    root = tmp_path_factory.mktemp("root")
    cols, labels = data
    for version, mode in (("1.0.0", "boosted"), ("1.1.0", "random_forest")):
        spec = BuildSpec(equipment_id="sorter-1", power="7.5kW", model_version=version, power_range_kw=(0, 100),
                         power_source=TORQUE_SPEED, classifier_features=FEATURES, classifier_mode=mode,
                         classifier_rounds=40, seed=4)
        build_bundle(spec, cols, labels, root, data="simulator:test", progress=lambda _m: None)
    return root


def _readings(data: tuple[dict[str, np.ndarray], np.ndarray], n: int = 60) -> list[Reading]:
    cols, labels = data
    picks = [*np.flatnonzero(labels == "none")[: n // 2], *np.flatnonzero(labels != "none")[: n // 2]]
    return [Reading("sorter-1", {f: float(cols[f][i]) for f in FEATURES}, "7.5kW") for i in picks]


def test_built_without_a_gate_in_both_tree_modes(root: Path) -> None:
    for version, mode in (("1.0.0", "boosted"), ("1.1.0", "random_forest")):
        manifest = json.loads((root / "sorter-1" / "7.5kW" / version / "manifest.json").read_text())
        assert manifest["modalities"] == {} and manifest["classifier"]["mode"] == mode
        metrics = manifest["provenance"]["metrics"]
        assert metrics["classifier_f1_failure_vs_none"] > 0.9, metrics
        assert sorted(p.name for p in (root / "sorter-1" / "7.5kW" / version).iterdir()) == [
            "evaluation.json", "manifest.json", "warmup.json", "xgb.json"]


@pytest.mark.parametrize("enable_xgb", [False, True])
def test_the_classifier_is_the_verdict_on_every_path(root: Path, data: tuple, enable_xgb: bool) -> None:
    cat = Catalog.scan(root)
    rs = _readings(data)
    results = score_readings(cat, rs, enable_xgb=enable_xgb)
    for r in results:
        assert isinstance(r, dict) and r["modalities"] == {}
        clf = r["classifier"]
        assert clf["status"] == "ran"
        assert r["anomaly"] is (clf["label"] != "none")
        assert r["score"] == pytest.approx(1 - clf["probabilities"]["none"])
    assert 0 < sum(r["anomaly"] for r in results) < len(results)  # type: ignore[index]

    # the stream stores what HTTP answers, row for row
    origins = [Origin(T0 + dt.timedelta(seconds=i), r.features, "kafka", 0, i, None) for i, r in enumerate(rs)]
    encoded, rejected = encode_scored(cat, rs, origins, enable_xgb=enable_xgb)
    assert rejected == []
    _, _, want = rows_from_verdicts(origins, results)
    verdicts = all_verdicts(encoded.judged)
    assert sorted(verdicts, key=lambda v: v.time) == want


def test_missing_and_non_finite_inputs(root: Path, data: tuple) -> None:
    cat = Catalog.scan(root)
    good = _readings(data, 2)[0].features
    partial = {k: v for k, v in good.items() if k != "torque_nm"}
    (missing,) = score_readings(cat, [Reading("sorter-1", partial, "7.5kW")], enable_xgb=False)
    assert isinstance(missing, FeatureError) and "torque_nm: missing (the classifier needs" in missing.message
    (bad,) = score_readings(cat, [Reading("sorter-1", {**good, "torque_nm": float("nan")}, "7.5kW")],
                            enable_xgb=False)
    assert isinstance(bad, FeatureError) and "torque_nm: not a finite number" in bad.message


def test_over_http(root: Path, data: tuple, tmp_path: Path) -> None:
    served = tmp_path / "root"
    shutil.copytree(root, served)
    client = TestClient(create_local_app(Settings(root=served)))
    feats = _readings(data, 2)[-1].features  # a fault row
    one = client.post(f"{API}/predict", json={"equipment_id": "sorter-1", "features": feats})
    assert one.status_code == 200, one.text
    assert one.json()["classifier"]["status"] == "ran" and one.json()["anomaly"] is True
    bulk = client.post(f"{API}/predict/bulk", json={"readings": [{"equipment_id": "sorter-1", "features": feats}]})
    assert bulk.status_code == 200 and bulk.json()["results"][0]["anomaly"] is True, bulk.text
    cols = client.post(f"{API}/predict/columns", json={"equipment_id": "sorter-1",
                                                        "columns": {k: [v, v] for k, v in feats.items()}})
    assert cols.status_code == 200 and cols.json()["anomaly"] == [True, True], cols.text


def test_a_bundle_needs_a_gate_or_a_classifier(root: Path) -> None:
    doc = json.loads((root / "sorter-1" / "7.5kW" / "1.0.0" / "manifest.json").read_text())
    doc["classifier"] = None
    doc["files"].pop("xgb.json")
    with pytest.raises(ValidationError, match="at least one modality or a classifier"):
        Manifest.model_validate(doc)
    with pytest.raises(ValidationError, match="classifier-only bundle needs its classifier features"):
        BuildSpec(equipment_id="x", power="p", model_version="1.0.0", power_range_kw=(0, 1))
    with pytest.raises(ValidationError, match="nothing to build"):
        BuildSpec(equipment_id="x", power="p", model_version="1.0.0", power_range_kw=(0, 1), classifier=False)
