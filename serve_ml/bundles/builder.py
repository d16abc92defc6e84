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
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

import serve_ml
from serve_ml.bundles import kinds
from serve_ml.bundles.derived import DerivedFeature, check_order, derive
from serve_ml.bundles.fault_classifier import binary_f1, fit_classifier
from serve_ml.bundles.loader import load_bundle, sha256_file
from serve_ml.bundles.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    PowerFromFeature,
    PowerFromTorqueSpeed,
)
from serve_ml.bundles.scoring import materialise, score_group

Progress = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class BuildSpec(BaseModel):
    """What to build. Validated before any training starts."""

    model_config = ConfigDict(extra="forbid")

    equipment_id: str
    power: str
    model_version: str
    power_range_kw: tuple[float, float]
    default_power: bool = False
    power_source: PowerFromFeature | PowerFromTorqueSpeed | None = None
    modalities: dict[str, list[str]] = Field(min_length=1)
    kind: str = Field(default="dense_autoencoder", description="Model kind of every modality (serve_ml.bundles.kinds).")
    hidden: dict[str, list[int]] = Field(default_factory=dict, description="Per-modality encoder widths.")
    classifier: bool = True
    classifier_features: list[str] | None = Field(
        default=None, description="Classifier inputs (raw or derived); default: every modality feature.")
    derived: list[DerivedFeature] = Field(default_factory=list, description="Features the bundle computes.")
    classifier_depth: int = Field(default=4, ge=1, le=12, description="XGBoost max_depth.")
    classifier_rounds: int = Field(default=150, ge=1, le=5000, description="XGBoost boosting rounds.")
    normal_label: str = Field(default="none", description="The label of normal rows.")
    seed: int = 0
    epochs: int = Field(default=60, ge=1)
    batch_size: int = Field(default=256, ge=8)
    threshold_quantile: float = Field(default=0.995, gt=0.5, lt=1.0)
    warmup_rows: int = Field(default=16, ge=1)


def _splits(n: int, rng: np.random.Generator, fractions: tuple[float, ...]) -> list[np.ndarray]:
    idx = rng.permutation(n)
    cuts = np.cumsum([int(round(f * n)) for f in fractions[:-1]])
    return np.split(idx, cuts)


def _f1(y_true: np.ndarray, y_pred: np.ndarray, positive: str) -> float:
    tp = np.sum((y_pred == positive) & (y_true == positive))
    fp = np.sum((y_pred == positive) & (y_true != positive))
    fn = np.sum((y_pred != positive) & (y_true == positive))
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 1.0


def build_bundle(
    spec: BuildSpec,
    columns: dict[str, np.ndarray],
    labels: np.ndarray,
    root: Path,
    *,
    data: str,
    data_sha256: str | None = None,
    progress: Progress = _stderr,
) -> tuple[Path, dict]:
    """Train and write ``<root>/<equipment>/<power>/<version>``; return its path and metrics."""
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    rng = np.random.default_rng(spec.seed)
    root = Path(root).resolve()
    final = root / spec.equipment_id / spec.power / spec.model_version
    if final.exists():
        raise FileExistsError(f"{final} exists; bundles are immutable, use a new model_version")
    kind = kinds.get(spec.kind)
    if kind is None:
        raise ValueError(f"model kind {spec.kind!r} cannot be trained here; known: {', '.join(kinds.names())}")

    check_order(spec.derived)
    columns = derive(columns, spec.derived)
    needed = {f for fs in spec.modalities.values() for f in fs} | set(spec.classifier_features or [])
    missing = sorted(needed - set(columns))
    if missing:
        raise ValueError(f"the training data has no column(s) {missing} (derived: "
                         f"{', '.join(d.name for d in spec.derived) or 'none'})")
    normal = np.flatnonzero(labels == spec.normal_label)
    faulty = np.flatnonzero((labels != spec.normal_label) & (labels != "unknown"))
    tr, cal, te = (normal[s] for s in _splits(len(normal), rng, (0.7, 0.15, 0.15)))
    ftr, fte = (faulty[s] for s in _splits(len(faulty), rng, (0.6, 0.4)))
    progress(f"building {spec.equipment_id}/{spec.power}/{spec.model_version} from {data}: "
             f"{len(normal)} normal rows ({len(tr)}/{len(cal)}/{len(te)} train/calib/test), "
             f"{len(faulty)} fault rows")

    staging = root / ".staging" / uuid.uuid4().hex
    bdir = staging / spec.equipment_id / spec.power / spec.model_version
    bdir.mkdir(parents=True)
    try:
        modalities = {}
        for name, feats in spec.modalities.items():
            x = np.column_stack([columns[f] for f in feats]).astype(np.float64)
            mean, scale = x[tr].mean(axis=0), x[tr].std(axis=0) + 1e-9
            arch = kind.default_spec(len(feats), {"hidden": spec.hidden.get(name)})
            state = kind.fit((x[tr] - mean) / scale, arch, seed=spec.seed, epochs=spec.epochs,
                             batch_size=spec.batch_size, progress=progress, label=name)
            weights = f"{name}.pt"
            torch.save(state, bdir / weights)
            modalities[name] = {"features": feats, "scaler": {"mean": mean.tolist(), "scale": scale.tolist()},
                                "model": arch.model_dump(), "weights": weights, "threshold": 1.0}
        classifier = None
        oof_metrics: dict[str, Any] = {}
        if spec.classifier and len(faulty):
            feats = spec.classifier_features or list(dict.fromkeys(f for fs in spec.modalities.values() for f in fs))
            classes = [spec.normal_label, *sorted(set(labels[faulty].tolist()))]
            labelled = np.concatenate([normal, faulty])
            cidx = {c: i for i, c in enumerate(classes)}
            y = np.array([cidx[c] for c in labels[labelled]])
            progress(f"  [classifier] XGBoost on {len(labelled)} labelled rows, thresholds calibrated out of fold")
            fit = fit_classifier(np.column_stack([columns[f] for f in feats])[labelled], y, classes, 0, seed=spec.seed,
                                 max_depth=spec.classifier_depth, rounds=spec.classifier_rounds)
            fit.booster.save_model(str(bdir / "xgb.json"))
            classifier = {"kind": "xgboost", "file": "xgb.json", "features": feats, "classes": classes,
                          "normal_class": spec.normal_label, "fault_thresholds": fit.thresholds}
            pred = np.asarray(classes)[fit.oof_labels]
            truth = labels[labelled]
            faults = classes[1:]
            oof_metrics = {
                "classifier_eval": f"{fit.folds}-fold out-of-fold over all {len(labelled)} labelled rows",
                "classifier_f1_failure_vs_none": round(binary_f1(truth != spec.normal_label,
                                                                 pred != spec.normal_label), 4),
                "classifier_f1_macro_faults": round(float(np.mean([_f1(truth, pred, c) for c in faults])), 4),
                "classifier_f1_by_fault": {c: round(_f1(truth, pred, c), 4) for c in faults},
            }
        manifest = {
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
        bundle = _write_and_load(bdir, staging, manifest)

        # Calibrate each gate on held-out normal rows, then measure on the test rows.
        metrics: dict[str, Any] = {"rows_train_normal": len(tr), "rows_calib_normal": len(cal),
                         "rows_test_normal": len(te), "rows_test_fault": len(fte)}
        for name, mod in bundle.modalities.items():
            x = (np.column_stack([columns[f] for f in mod.features]) - mod.mean) / mod.scale
            thr = float(np.quantile(mod.model.errors(x[cal]), spec.threshold_quantile))
            manifest["modalities"][name]["threshold"] = thr  # type: ignore[index]
        bundle = _write_and_load(bdir, staging, manifest)
        full = {f: columns[f] for f in bundle.known_features if f in columns}  # inputs only: derived are recomputed
        test_rows = np.concatenate([te, fte])
        g = score_group(bundle, {f: c[test_rows] for f, c in full.items()}, len(test_rows), enable_xgb=True)
        alarm = g.anomaly
        metrics["false_alarm_rate"] = round(float(alarm[: len(te)].mean()), 5) if len(te) else 0.0
        if len(fte):
            metrics["detection_rate"] = round(float(alarm[len(te):].mean()), 5)
            by_mode = {}
            for mode in sorted(set(labels[fte].tolist())):
                sel = labels[fte] == mode
                by_mode[mode] = round(float(alarm[len(te):][sel].mean()), 4)
            metrics["detection_rate_by_fault"] = by_mode
        metrics.update(oof_metrics)
        manifest["provenance"]["metrics"] = metrics  # type: ignore[index]

        # Warm-up rows: recorded outputs that a swap must reproduce before going live.
        pick = np.concatenate([te[: spec.warmup_rows // 2], fte[: spec.warmup_rows - spec.warmup_rows // 2]])
        pick = pick if len(pick) else tr[: spec.warmup_rows]
        rows = [{f: float(full[f][i]) for f in sorted(full)} for i in pick]
        wg = score_group(bundle, {f: full[f][pick] for f in sorted(full)}, len(pick), enable_xgb=True)
        expected = [{"score": r["score"], "anomaly": r["anomaly"],
                     "probabilities": r["classifier"].get("probabilities")}
                    for r in materialise(wg) if isinstance(r, dict)]
        (bdir / "warmup.json").write_text(json.dumps({"rows": rows, "expected": expected}, indent=1))
        manifest["warmup"] = {"file": "warmup.json", "rtol": 1e-4, "atol": 1e-6}
        _write_and_load(bdir, staging, manifest)

        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(bdir, final)  # atomic on one filesystem: the bundle appears whole or not at all
        progress(f"wrote {final}")
        return final, metrics
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _prune_empty(root / ".staging")


def _write_and_load(bdir: Path, staging: Path, manifest: dict):
    manifest["files"] = {p.name: sha256_file(p) for p in sorted(bdir.iterdir()) if p.name != MANIFEST_NAME}
    (bdir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=False))
    return load_bundle(bdir, staging)


def _prune_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
