"""Load and validate one bundle directory. Refuses with a precise reason, never half-loads.

Weights are torch state dicts read with ``weights_only=True``; the classifier is
XGBoost JSON; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from serve_ml.bundles import kinds
from serve_ml.bundles.classifier import FaultClassifier
from serve_ml.bundles.kinds.base import Input, Scorer
from serve_ml.bundles.manifest import MANIFEST_NAME, Manifest, WarmupFile, is_safe_segment
from serve_ml.bundles.rul import RulRegressor
from serve_ml.core.errors import BundleInvalid

MAX_MANIFEST_BYTES = 1 << 20
MAX_FILE_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class LoadedModality:
    name: str
    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    threshold: float
    model: Scorer
    input: Input = "rows"
    window_steps: int = 1  # readings per window (sequence kinds)


@dataclass(frozen=True)
class Bundle:
    """A validated, fully loaded bundle. Immutable once built."""

    path: Path
    manifest: Manifest
    digest: str  # sha256 of manifest.json, which pins every file by checksum
    modalities: dict[str, LoadedModality]
    classifier: FaultClassifier | None
    warmup: WarmupFile | None
    known_features: frozenset[str] = field(default_factory=frozenset)
    rul: RulRegressor | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        m = self.manifest
        return (m.equipment_id, m.power, m.model_version)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _refuse(path: Path, reason: str) -> BundleInvalid:
    return BundleInvalid(str(path), reason)


def _check_location(path: Path, root: Path) -> tuple[str, str, str]:
    rel = path.relative_to(root) if path.is_relative_to(root) else None
    if rel is None or len(rel.parts) != 3:
        raise _refuse(path, f"not at <root>/<equipment_id>/<power>/<model_version> under {root}")
    for part in rel.parts:
        if not is_safe_segment(part):
            raise _refuse(path, f"{part!r} is not a safe path segment")
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise _refuse(path, "bundle directory is a link pointing outside the root")
    return rel.parts[0], rel.parts[1], rel.parts[2]


def _check_entries(path: Path, root: Path, listed: set[str]) -> None:
    present: set[str] = set()
    for entry in path.iterdir():
        if entry.is_symlink() and not entry.resolve().is_relative_to(root.resolve()):
            raise _refuse(path, f"{entry.name!r} is a link pointing outside the root")
        if not entry.is_file():
            raise _refuse(path, f"{entry.name!r} is not a regular file")
        present.add(entry.name)
    present.discard(MANIFEST_NAME)
    missing, extra = listed - present, present - listed
    if missing:
        raise _refuse(path, f"missing files: {sorted(missing)}")
    if extra:
        raise _refuse(path, f"extra files not in the manifest: {sorted(extra)}")


def _read_manifest(path: Path) -> tuple[Manifest, str]:
    mpath = path / MANIFEST_NAME
    if not mpath.is_file():
        raise _refuse(path, f"no {MANIFEST_NAME}")
    raw = mpath.read_bytes()
    if len(raw) > MAX_MANIFEST_BYTES:
        raise _refuse(path, f"{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _refuse(path, f"{MANIFEST_NAME} is not valid JSON: {exc}") from None
    except RecursionError:
        raise _refuse(path, f"{MANIFEST_NAME} is nested too deeply") from None
    if isinstance(data, dict) and data.get("schema_version") not in (None, 1):
        raise _refuse(path, f"unknown schema_version {data.get('schema_version')!r}; this server reads 1")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise _refuse(path, f"invalid manifest: {_problems(exc)}") from None
    return manifest, hashlib.sha256(raw).hexdigest()


def _problems(exc: ValidationError, most: int = 5) -> str:
    errors = exc.errors()
    listed = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}" for e in errors[:most])
    return listed + (f"; and {len(errors) - most} more" if len(errors) > most else "")


def _load_state(path: Path, file: Path, want: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/truncated files
        raise _refuse(path, f"{file.name}: not a loadable torch state dict ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _refuse(path, f"{file.name}: expected a state dict of tensors")
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != want:
        diff = sorted(set(want.items()) ^ set(got.items()))
        raise _refuse(path, f"{file.name}: shape mismatch with the declared architecture: {diff[:4]}")
    if not all(bool(torch.isfinite(v).all()) for v in state.values()):
        raise _refuse(path, f"{file.name}: weights contain NaN or infinity")
    return state


def load_bundle(path: Path, root: Path) -> Bundle:
    """Validate and load the bundle at ``path`` (which must sit three levels under ``root``).

    Whatever goes wrong while loading one bundle refuses that bundle with a reason
    (:class:`BundleInvalid`), so one broken directory never breaks a reload or a
    replica start."""
    try:
        return _load(Path(path), Path(root))
    except (BundleInvalid, OSError):
        raise
    except RecursionError:
        raise _refuse(Path(path), "a file is nested too deeply to load") from None
    except Exception as exc:
        raise _refuse(Path(path), f"could not be loaded: {type(exc).__name__}: {str(exc)[:300]}") from None


def _load(path: Path, root: Path) -> Bundle:
    equipment_id, power, version = _check_location(path, Path(root))
    manifest, digest = _read_manifest(path)
    if (manifest.equipment_id, manifest.power, manifest.model_version) != (equipment_id, power, version):
        raise _refuse(
            path,
            "manifest identity "
            f"{manifest.equipment_id}/{manifest.power}/{manifest.model_version} "
            "does not match the directory",
        )
    _check_entries(path, Path(root), set(manifest.files))
    for name, want in manifest.files.items():
        file = path / name
        if file.stat().st_size > MAX_FILE_BYTES:
            raise _refuse(path, f"{name} is larger than {MAX_FILE_BYTES} bytes")
        got = sha256_file(file)
        if got != want:
            raise _refuse(path, f"checksum mismatch for {name}: manifest {want[:12]}…, file {got[:12]}…")

    modalities: dict[str, LoadedModality] = {}
    for name, spec in manifest.modalities.items():
        kind = kinds.get(spec.model.kind)
        if kind is None:
            raise _refuse(path, f"modality {name!r}: model kind {spec.model.kind!r} is not supported by this server")
        state = _load_state(path, path / spec.weights, kind.expected_shapes(len(spec.features), spec.model))
        modalities[name] = LoadedModality(
            name=name,
            features=tuple(spec.features),
            mean=np.asarray(spec.scaler.mean, dtype=np.float64),
            scale=np.asarray(spec.scaler.scale, dtype=np.float64),
            threshold=float(spec.threshold),
            model=kind.scorer(state, spec.model),
            input=kind.input,
            window_steps=int(getattr(spec.model, "window_steps", 1)),
        )

    classifier = None
    if manifest.classifier is not None:
        try:
            classifier = FaultClassifier(path / manifest.classifier.file, manifest.classifier)
        except Exception as exc:  # xgboost raises XGBoostError / ValueError on bad JSON
            raise _refuse(path, f"{manifest.classifier.file}: {exc}") from None

    rul = None
    if manifest.rul is not None:
        try:
            rul = RulRegressor(path / manifest.rul.file, manifest.rul)
        except Exception as exc:  # xgboost raises XGBoostError / ValueError on bad JSON
            raise _refuse(path, f"{manifest.rul.file}: {exc}") from None

    warmup = None
    if manifest.warmup is not None:
        try:
            warmup = WarmupFile.model_validate_json((path / manifest.warmup.file).read_bytes())
        except ValidationError as exc:
            raise _refuse(path, f"{manifest.warmup.file}: {_problems(exc)}") from None

    known = set(manifest.all_features)
    src = manifest.power_source
    if src is not None:
        known |= {src.feature} if hasattr(src, "feature") else {src.torque_feature, src.speed_feature}
    return Bundle(
        path=path,
        manifest=manifest,
        digest=digest,
        modalities=modalities,
        classifier=classifier,
        warmup=warmup,
        known_features=frozenset(known),
        rul=rul,
    )
