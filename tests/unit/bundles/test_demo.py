"""The shipped demo fleet is what ``bundles.demo`` declares (a rebuild would give the
same shapes), and the run-to-failure machine's training data is laid out in units."""

from __future__ import annotations

import json

import numpy as np

from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.demo import RUN_TO_FAILURE_UNITS, demo_specs, training_data
from serve_ml.bundles.run_to_failure import LIVE_READINGS_PER_CYCLE
from tests.conftest import DEMO_ROOT


def test_every_shipped_bundle_has_the_declared_shape() -> None:
    catalog = Catalog.scan(DEMO_ROOT)
    specs = demo_specs()
    assert {(s.equipment_id, s.power) for s, _ in specs} == {(b.manifest.equipment_id, b.manifest.power)
                                                               for b in catalog.bundles.values()}
    for spec, _ in specs:
        m = json.loads((DEMO_ROOT / spec.equipment_id / spec.power / "1.0.0" / "manifest.json").read_text())
        assert {k: v["features"] for k, v in m["modalities"].items()} == spec.modalities, spec.equipment_id
        kinds = {k: v["model"]["kind"] for k, v in m["modalities"].items() if "kind" in v["model"]}
        assert {k: v for k, v in kinds.items() if v != "dense_autoencoder"} == spec.modality_kinds
        assert ("classifier" in m and m["classifier"] is not None) is spec.classifier
        assert (m.get("rul") or {}).get("alert_below") == (spec.rul.alert_below if spec.rul else None)
        assert [d["name"] for d in m.get("derived") or []] == [d.name for d in spec.derived]


def test_the_sequence_and_rul_machine_is_in_the_fleet() -> None:
    spindle = [s for s, _ in demo_specs() if s.equipment_id == "spindle-04"]
    assert spindle and spindle[0].modality_kinds == {"motor": "lstm_autoencoder"}
    m = json.loads((DEMO_ROOT / "spindle-04" / "7.5kW" / "1.0.0" / "manifest.json").read_text())
    assert m["modalities"]["motor"]["model"]["window_steps"] == 30 and m["rul"]["unit"] == "cycles"


def test_run_to_failure_training_data_comes_in_units_read_several_times_a_cycle() -> None:
    [(spec, source)] = [(s, src) for s, src in demo_specs() if src == "run-to-failure"]
    t = training_data(source, spec, None)
    assert t.ordering is not None and t.ordering.unit is not None and t.ordering.time is not None
    units = np.unique(t.ordering.unit)
    assert len(units) == RUN_TO_FAILURE_UNITS
    for u in units[:3]:
        cycles = t.ordering.time[t.ordering.unit == u]
        assert np.all(np.diff(cycles) >= 0) and cycles[0] == 1
        assert np.all(np.bincount(cycles.astype(int))[1:] == LIVE_READINGS_PER_CYCLE)
    assert set(t.columns) >= {"vibration_rms_mm_s", "current_a", "air_temp_k", "process_temp_k"}
    assert len(t.labels) == len(t.ordering.unit) and set(t.labels.tolist()) == {"none"}
