"""Train a bundle: one autoencoder per modality on normal rows, thresholds calibrated
on held-out normal rows, optionally an XGBoost fault classifier; write it atomically.

Deterministic for a given seed (single-threaded torch with deterministic kernels,
seeded splits, seeded XGBoost).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import serve_ml
from serve_ml.bundles import kinds
from serve_ml.bundles.build_spec import BuildSpec, Inputs, Progress
from serve_ml.bundles.classifier_training import choose_cascade, train_classifier
from serve_ml.bundles.datasets import Ordering
from serve_ml.bundles.derived import check_order, derive
from serve_ml.bundles.loader import Bundle, load_bundle, sha256_file
from serve_ml.bundles.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    EvaluationFile,
    Manifest,
)
from serve_ml.bundles.progress import ProgressPrinter
from serve_ml.bundles.rul_training import fit_rul_head, rul_labels, rul_target
from serve_ml.bundles.scoring import materialise, score_group
from serve_ml.bundles.splits import Rows, split_name, split_rows
from serve_ml.bundles.windows import take, window_index

__all__ = ["BuildSpec", "Progress", "build_bundle"]


def build_bundle(
    spec: BuildSpec,
    columns: dict[str, np.ndarray],
    labels: np.ndarray,
    root: Path,
    *,
    data: str,
    data_sha256: str | None = None,
    progress: Progress | None = None,
    ordering: Ordering | None = None,
) -> tuple[Path, dict]:
    """Train and write ``<root>/<equipment>/<power>/<version>``; return its path and metrics.

    Phases: check and derive, split, train the gates, train the classifier, write,
    calibrate the gates, measure, record the warm-up; the bundle is built in
    ``<root>/.staging/`` and renamed into place, whole or not at all."""
    progress = progress or ProgressPrinter()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    root = Path(root).resolve()
    final = root / spec.equipment_id / spec.power / spec.model_version
    if final.exists():
        raise FileExistsError(f"{final} exists; bundles are immutable, use a new model_version")
    kind_of: dict[str, kinds.ModelKind] = {}
    for name in spec.modalities:
        found = kinds.get(spec.modality_kinds.get(name, spec.kind))
        if found is None:
            raise ValueError(f"model kind {spec.modality_kinds.get(name, spec.kind)!r} cannot be trained here; "
                             f"known: {', '.join(kinds.names())}")
        kind_of[name] = found
    unknown = sorted(set(spec.modality_kinds) - set(spec.modalities))
    if unknown:
        raise ValueError(f"kinds given for modalities the bundle does not have: {unknown}")
    columns = _derive_checked(spec, columns)
    target = None
    if spec.rul is not None:
        target = rul_target(ordering)
        labels = rul_labels(labels, target, spec.rul, spec.normal_label)
    rows = split_rows(spec, labels, ordering)
    win = None
    if any(k.input == "windows" for k in kind_of.values()):
        # Rows with a whole window of their own unit behind them; a normal row's window
        # is normal only if every reading in it is (the gates learn and judge those).
        win = window_index(len(labels), spec.window_steps, ordering)
        full = win[:, 0] >= 0
        clean = full & (labels[np.where(full[:, None], win, 0)] == spec.normal_label).all(axis=1)
        rows = rows.only(full & ((labels != spec.normal_label) | clean))
    if spec.modalities and not (len(rows.train) and len(rows.calib)):
        raise ValueError(f"no normal rows to {'train' if not len(rows.train) else 'calibrate'} the gates on "
                         f"(split {spec.split}: {len(rows.train)} train, {len(rows.calib)} calibration rows)")
    progress(f"building {spec.equipment_id}/{spec.power}/{spec.model_version} from {data}: "
             f"{len(rows.normal)} normal rows ({len(rows.train)}/{len(rows.calib)}/{len(rows.test)} "
             f"train/calib/test, split {spec.split}), {len(rows.faulty)} fault rows")

    staging = root / ".staging" / uuid.uuid4().hex
    bdir = staging / spec.equipment_id / spec.power / spec.model_version
    bdir.mkdir(parents=True)
    try:
        modalities = _train_gates(spec, kind_of, columns, rows, bdir, progress, win)
        classifier, clf_metrics, oof = train_classifier(spec, columns, labels, rows, bdir, progress)
        rul_head: dict[str, Any] | None = None
        rul_metrics: dict[str, Any] = {}
        rul_pairs = None
        if spec.rul is not None:
            feats = spec.rul.features or list(dict.fromkeys(
                [*(f for fs in spec.modalities.values() for f in fs), *(classifier or {}).get("features", [])]))
            missing = [f for f in feats if f not in columns]
            if missing:
                raise ValueError(f"the training data has no RUL feature(s) {missing}")
            progress(f"  [rul] XGBoost regressor on {len(feats)} features, cap {spec.rul.cap}")
            rul_head, rul_metrics, rul_pairs = fit_rul_head(spec.rul, feats, columns, target, rows.part,  # type: ignore[arg-type]
                                                            bdir, seed=spec.seed)
        manifest = _manifest(spec, modalities, classifier, data, data_sha256)
        manifest["rul"] = rul_head
        bundle = _write_and_load(bdir, staging, manifest)
        for name, mod in bundle.modalities.items():  # gates calibrated on held-out normal rows
            x = (_model_input(mod.features, columns, rows.calib, win if mod.input == "windows" else None)
                 - mod.mean) / mod.scale
            manifest["modalities"][name]["threshold"] = spec.threshold_rule.threshold(mod.model.errors(x))
            manifest["modalities"][name]["threshold_rule"] = spec.threshold_rule.model_dump()
        bundle = _write_and_load(bdir, staging, manifest)
        known = {f: columns[f] for f in bundle.known_features if f in columns}  # derived ones are recomputed

        def inputs(rows_: np.ndarray) -> dict[str, np.ndarray]:
            return take(known, rows_, win)

        cascade, cascade_metrics = choose_cascade(spec, bundle, inputs, labels, rows, oof)
        if cascade != "always":
            manifest["cascade"] = cascade
            bundle = _write_and_load(bdir, staging, manifest)
        progress(f"  [cascade] {cascade}" + (f" ({cascade_metrics['cascade_reason']})" if cascade_metrics else ""))
        histograms: dict[str, Any] = {}
        metrics = {"split": split_name(spec, ordering), **_measure(bundle, inputs, labels, rows, histograms),
                   **clf_metrics, **cascade_metrics, **rul_metrics}
        manifest["provenance"]["metrics"] = metrics
        evaluation = EvaluationFile(split=metrics["split"], modalities=histograms, rul=rul_pairs)
        (bdir / "evaluation.json").write_text(evaluation.model_dump_json())
        manifest["evaluation"] = {"file": "evaluation.json"}
        manifest["warmup"] = _record_warmup(bundle, inputs, rows, spec, bdir)
        _write_and_load(bdir, staging, manifest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(bdir, final)  # atomic on one filesystem: the bundle appears whole or not at all
        progress(f"wrote {final}")
        return final, metrics
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _prune_empty(root / ".staging")


def _derive_checked(spec: BuildSpec, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    check_order(spec.derived)
    columns = derive(columns, spec.derived)
    needed = {f for fs in spec.modalities.values() for f in fs} | set(spec.classifier_features or [])
    missing = sorted(needed - set(columns))
    if missing:
        raise ValueError(f"the training data has no column(s) {missing} (derived: "
                         f"{', '.join(d.name for d in spec.derived) or 'none'})")
    return columns


def _model_input(features: Sequence[str], columns: dict[str, np.ndarray], rows: np.ndarray,
                 win: np.ndarray | None) -> np.ndarray:
    """Unscaled model input for ``rows``: ``(rows, features)``, or with ``win``
    ``(rows, steps, features)``."""
    if win is None:
        return np.column_stack([columns[f][rows] for f in features]).astype(np.float64)
    return np.stack([columns[f][win[rows]] for f in features], axis=-1).astype(np.float64)


def _train_gates(spec: BuildSpec, kind_of: dict[str, kinds.ModelKind], columns: dict[str, np.ndarray], rows: Rows,
                 bdir: Path, progress: Progress, win: np.ndarray | None) -> dict[str, Any]:
    """One model per modality on the normal training rows; thresholds come later."""
    out = {}
    for name, feats in spec.modalities.items():
        kind = kind_of[name]
        point = np.column_stack([columns[f][rows.train] for f in feats]).astype(np.float64)
        mean, scale = point.mean(axis=0), point.std(axis=0) + 1e-9
        arch = kind.default_spec(len(feats), {"hidden": spec.hidden.get(name), "window_steps": spec.window_steps,
                                              "centre": spec.centre_windows})
        x = _model_input(feats, columns, rows.train, win if kind.input == "windows" else None)
        state = kind.fit((x - mean) / scale, arch, seed=spec.seed, epochs=spec.epochs,
                         batch_size=spec.batch_size, progress=progress, label=name)
        torch.save(state, bdir / f"{name}.pt")
        out[name] = {"features": feats, "scaler": {"mean": mean.tolist(), "scale": scale.tolist()},
                     "model": arch.model_dump(), "weights": f"{name}.pt", "threshold": 1.0}
    return out


def _manifest(spec: BuildSpec, modalities: dict[str, Any], classifier: dict[str, Any] | None, data: str,
              data_sha256: str | None) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION, "equipment_id": spec.equipment_id, "power": spec.power,
        "model_version": spec.model_version, "power_range_kw": list(spec.power_range_kw),
        "default_power": spec.default_power,
        "power_source": spec.power_source.model_dump() if spec.power_source else None,
        "derived": [d.model_dump() for d in spec.derived],
        "modalities": modalities, "classifier": classifier,
        "provenance": {"data": data, "data_sha256": data_sha256, "seed": spec.seed,
                       "trained_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
                       "builder": f"serve-ml {serve_ml.__version__}", "metrics": {}},
        "files": {},
    }


def _measure(bundle: Bundle, inputs: Inputs, labels: np.ndarray, rows: Rows,
             histograms: dict[str, Any]) -> dict[str, Any]:
    """Gate false alarms on held-out normal rows, detection on held-out fault rows;
    each gate's held-out errors binned into ``histograms``."""
    te, fte = rows.test, rows.fault_test
    metrics: dict[str, Any] = {"rows_train_normal": len(rows.train), "rows_calib_normal": len(rows.calib),
                               "rows_test_normal": len(te), "rows_test_fault": len(fte)}
    test_rows = np.concatenate([te, fte])
    g = score_group(bundle, inputs(test_rows), len(test_rows), enable_xgb=True)
    alarm = g.anomaly
    for m in g.modalities:
        if m.errors is not None and len(test_rows):
            histograms[m.name] = _histogram(m.errors, len(te), m.threshold)
    metrics["false_alarm_rate"] = round(float(alarm[: len(te)].mean()), 5) if len(te) else 0.0
    if len(fte):
        metrics["detection_rate"] = round(float(alarm[len(te):].mean()), 5)
        metrics["detection_rate_by_fault"] = {
            mode: round(float(alarm[len(te):][labels[fte] == mode].mean()), 4)
            for mode in sorted(set(labels[fte].tolist()))}
    return metrics


def _histogram(errors: np.ndarray, n_normal: int, threshold: float, bins: int = 40) -> dict[str, Any]:
    """Log-spaced bins over the errors and the threshold; normal rows come first."""
    positive = errors[errors > 0]
    low = float(positive.min()) * 0.9 if len(positive) else threshold / 10
    high = max(float(errors.max()), threshold) * 1.1
    edges = np.geomspace(min(low, threshold / 2), high, bins + 1)
    clipped = np.clip(errors, edges[0], edges[-1])
    normal, _ = np.histogram(clipped[:n_normal], edges)
    fault, _ = np.histogram(clipped[n_normal:], edges)
    return {"threshold": threshold, "edges": edges.tolist(), "normal": normal.tolist(), "fault": fault.tolist()}


def _record_warmup(bundle: Bundle, inputs: Inputs, rows: Rows, spec: BuildSpec,
                   bdir: Path) -> dict[str, Any]:
    """Sample rows and their outputs, which a swap must reproduce before going live."""
    half = spec.warmup_rows // 2
    pick = np.concatenate([rows.test[:half], rows.fault_test[: spec.warmup_rows - half]])
    pick = pick if len(pick) else rows.train[: spec.warmup_rows]
    cols = inputs(pick)
    names = sorted(cols)
    sample = [{f: cols[f][k].tolist() for f in names} for k in range(len(pick))]
    g = score_group(bundle, cols, len(pick), enable_xgb=True)
    expected = [{"score": r["score"], "anomaly": r["anomaly"], "probabilities": r["classifier"].get("probabilities"),
                 **({"rul": r["rul"]["value"]} if r.get("rul") else {})} for r in materialise(g) if isinstance(r, dict)]
    (bdir / "warmup.json").write_text(json.dumps({"rows": sample, "expected": expected}, indent=1))
    return {"file": "warmup.json", "rtol": 1e-4, "atol": 1e-6}


def _write_and_load(bdir: Path, staging: Path, manifest: dict[str, Any]) -> Bundle:
    """Write the manifest as the ``Manifest`` model validates and serialises it, then
    load the bundle as the server would: what the builder writes is what it checked."""
    manifest["files"] = {p.name: sha256_file(p) for p in sorted(bdir.iterdir()) if p.name != MANIFEST_NAME}
    doc = Manifest.model_validate(manifest)
    (bdir / MANIFEST_NAME).write_text(doc.model_dump_json(indent=2))
    return load_bundle(bdir, staging)


def _prune_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
