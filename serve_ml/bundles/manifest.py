"""The bundle manifest (``manifest.json``), schema version 1.

A bundle lives at ``<root>/<equipment_id>/<power>/<model_version>/`` and holds this
manifest plus the files it lists in ``files`` (each with its sha256). Nothing else
may be in the directory. See README "Bundle format" for the prose specification.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny, field_validator, model_validator

from serve_ml.bundles import kinds
from serve_ml.bundles.derived import DerivedFeature, check_order, raw_inputs
from serve_ml.bundles.kinds.base import KindSpec
from serve_ml.bundles.thresholds import ThresholdRule

Cascade = Literal["always", "gate_then_classify"]

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

# A safe path segment: no separators, no "..", no leading dot or dash, bounded length.
SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_safe_segment(name: str) -> bool:
    return bool(SAFE_SEGMENT.match(name)) and ".." not in name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _finite(values: list[float], what: str) -> list[float]:
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} must be finite numbers")
    return values


class Scaler(_Strict):
    """Standardisation applied before the model: ``(x - mean) / scale``."""

    mean: list[float] = Field(description="Per-feature mean, in feature order.")
    scale: list[float] = Field(description="Per-feature scale (> 0), in feature order.")

    @model_validator(mode="after")
    def _check(self) -> Scaler:
        _finite(self.mean, "scaler.mean")
        _finite(self.scale, "scaler.scale")
        if len(self.mean) != len(self.scale):
            raise ValueError("scaler.mean and scaler.scale differ in length")
        if any(s <= 0 for s in self.scale):
            raise ValueError("scaler.scale must be > 0")
        return self


# A modality's model block is validated by its kind's own spec (serve_ml.bundles.kinds),
# so a new kind needs no edit here.
ModelSpec = Annotated[SerializeAsAny[KindSpec], BeforeValidator(kinds.parse_spec)]


class Modality(_Strict):
    """One sensor modality: its features, scaler, autoencoder weights and gate threshold."""

    features: list[str] = Field(min_length=1, description="Feature names, in model input order.")
    scaler: Scaler = Field(description="Standardisation of the features.")
    model: ModelSpec = Field(description="The model: its `kind` and that kind's parameters.")
    weights: str = Field(description="File name of the torch state dict (loaded weights_only).")
    threshold: float = Field(gt=0, description="Gate: mean squared reconstruction error above this is anomalous.")
    threshold_rule: ThresholdRule | None = Field(
        default=None, description="How the builder set `threshold` (rule and parameters); absent: not recorded.")

    @field_validator("threshold")
    @classmethod
    def _finite_threshold(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("threshold must be finite")
        return v

    @model_validator(mode="after")
    def _check(self) -> Modality:
        if len(set(self.features)) != len(self.features):
            raise ValueError("duplicate feature names")
        if len(self.scaler.mean) != len(self.features):
            raise ValueError(
                f"scaler has {len(self.scaler.mean)} entries for {len(self.features)} features"
            )
        return self


class Classifier(_Strict):
    """Optional XGBoost fault classifier, stored as XGBoost JSON (never pickled)."""

    kind: Literal["xgboost"] = "xgboost"
    file: Literal["xgb.json"] = Field(default="xgb.json", description="Model file name.")
    features: list[str] = Field(min_length=1, description="Input feature names, in order.")
    classes: list[str] = Field(min_length=2, description="Class labels by output index.")
    normal_class: str = Field(default="none", description="The label meaning 'no fault'.")
    mode: Literal["boosted", "random_forest"] = Field(
        default="boosted", description="How the trees were grown (the file format is the same).")
    fault_thresholds: dict[str, float] | None = Field(
        default=None,
        description="Per fault class, the probability at or above which a row is that fault (the most "
                    "probable such class wins; none: the normal class). The builder calibrates them for "
                    "F1 on out-of-fold rows. Unset: the most probable class.")

    @model_validator(mode="after")
    def _check(self) -> Classifier:
        if self.normal_class not in self.classes:
            raise ValueError(f"normal_class {self.normal_class!r} is not among classes")
        if self.fault_thresholds is not None:
            wrong = set(self.fault_thresholds) - (set(self.classes) - {self.normal_class})
            if wrong:
                raise ValueError(f"fault_thresholds name classes that are not fault classes: {sorted(wrong)}")
            if not all(math.isfinite(v) and 0 < v <= 1.01 for v in self.fault_thresholds.values()):
                raise ValueError("fault_thresholds must be in (0, 1.01] (above 1: never that class)")
        return self


class RulInterval(_Strict):
    """Where the true RUL fell around the prediction on units the regressor never saw:
    the ``(1 - coverage) / 2`` and ``(1 + coverage) / 2`` quantiles of the residuals."""

    lower: float = Field(le=0, description="Added to the prediction for the interval's lower end (<= 0).")
    upper: float = Field(ge=0, description="Added to the prediction for the interval's upper end (>= 0).")
    coverage: float = Field(gt=0, lt=1, description="Share of held-out rows the interval covered, by design.")


class RulHead(_Strict):
    """A remaining-useful-life regressor over the reading's features (XGBoost JSON).

    Answers ``rul: {value, unit, lower, upper}`` with the value clipped to
    ``[0, cap]``; below ``alert_below`` the stream opens an alert of type ``rul``."""

    kind: Literal["xgboost_rul"] = "xgboost_rul"
    file: Literal["rul.json"] = Field(default="rul.json", description="Model file name.")
    features: list[str] = Field(min_length=1, max_length=256, description="Regressor input order.")
    unit: Literal["cycles", "hours", "minutes"] = Field(default="cycles", description="Unit of the RUL.")
    cap: float | None = Field(default=125.0, gt=0, description="Target cap used in training (piecewise-linear "
                              "RUL); predictions never exceed it. None: uncapped.")
    interval: RulInterval
    alert_below: float | None = Field(default=None, ge=0, description="A RUL below this opens a 'rul' alert on "
                                      "the stream; None: no RUL alerts.")

    @field_validator("features")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("RUL features repeat a name")
        return v


class PowerFromFeature(_Strict):
    """The reading carries its power directly."""

    feature: str = Field(description="Feature holding the power, in kW.")


class PowerFromTorqueSpeed(_Strict):
    """Power derived as ``torque[Nm] * speed[rpm] * 2*pi / 60 / 1000`` kW."""

    torque_feature: str
    speed_feature: str


class Warmup(_Strict):
    """Sample rows and the outputs recorded at build time, replayed before going live."""

    file: str = Field(default="warmup.json", description="JSON file: {rows, expected}.")
    rtol: float = Field(default=1e-4, ge=0, description="Relative tolerance on scores.")
    atol: float = Field(default=1e-6, ge=0, description="Absolute tolerance on scores.")


class WarmupExpected(_Strict):
    """What the builder recorded for one warm-up row."""

    score: float = Field(description="Combined anomaly score of the row.")
    anomaly: bool = Field(description="Whether the row crossed its threshold.")
    probabilities: dict[str, float] | None = Field(default=None, description="Classifier probabilities, if any.")
    rul: float | None = Field(default=None, description="Predicted remaining useful life, if the bundle has a head.")


class WarmupFile(_Strict):
    """The warm-up file: rows to score at load time and the outputs they must reproduce."""

    rows: list[dict[str, float | list[float]]] = Field(
        min_length=1, max_length=1024,
        description="Feature name -> value (a window of values, oldest first, for sequence bundles), one object "
                    "per row.")
    expected: list[WarmupExpected] = Field(min_length=1, max_length=1024,
                                           description="Recorded output per row, in the same order.")

    def point_rows(self) -> list[dict[str, float]]:
        """The rows as single readings; a sequence bundle's windowed rows are refused."""
        if any(isinstance(v, list) for r in self.rows for v in r.values()):
            raise ValueError("these warm-up rows are windows (a sequence bundle), not single readings")
        return self.rows  # type: ignore[return-value]

    @model_validator(mode="after")
    def _same_length(self) -> WarmupFile:
        if len(self.rows) != len(self.expected):
            raise ValueError(f"{len(self.rows)} rows but {len(self.expected)} expected outputs")
        return self


class Evaluation(_Strict):
    """The builder's held-out figures in a file of their own (``bundle report`` draws them)."""

    file: Literal["evaluation.json"] = Field(default="evaluation.json", description="JSON file: EvaluationFile.")


class ErrorHistogram(_Strict):
    """One gate's reconstruction errors on held-out rows, binned."""

    threshold: float
    edges: list[float] = Field(min_length=2, max_length=202, description="Bin edges (log-spaced).")
    normal: list[int] = Field(description="Held-out normal rows per bin.")
    fault: list[int] = Field(description="Held-out fault rows per bin.")


class RulPairs(_Strict):
    """The RUL head on the units it never saw: truth and prediction per row (sampled)."""

    truth: list[float] = Field(max_length=5000)
    predicted: list[float] = Field(max_length=5000)
    unit: str


class EvaluationFile(_Strict):
    split: str
    modalities: dict[str, ErrorHistogram] = Field(default_factory=dict)
    rul: RulPairs | None = None


class Provenance(_Strict):
    """Where the bundle came from: data, seed, date and held-out metrics."""

    model_config = ConfigDict(extra="allow", frozen=True)

    data: str = Field(description="Training data: a file name or 'simulator:<profile>'.")
    data_sha256: str | None = Field(default=None, description="Checksum of the training data.")
    seed: int | None = None
    trained_at: str = Field(description="ISO-8601 UTC time of the build.")
    builder: str = Field(description="Tool and version that built the bundle.")
    metrics: dict[str, float | int | str | dict[str, float | int | str]] = Field(default_factory=dict)


class Manifest(_Strict):
    schema_version: int = Field(description="Manifest schema version; this server reads 1.")
    equipment_id: str
    power: str = Field(description="Power class label, e.g. '7.5kW'; equals the directory name.")
    model_version: str = Field(description="PEP 440 version; equals the directory name.")
    power_range_kw: tuple[float, float] = Field(
        description="Readings with power in [low, high) kW belong to this power class."
    )
    default_power: bool = Field(
        default=False, description="This power class is the equipment's fallback bucket."
    )
    power_source: PowerFromFeature | PowerFromTorqueSpeed | None = Field(
        default=None, description="How to find a reading's power for automatic bucket choice."
    )
    derived: list[DerivedFeature] = Field(
        default_factory=list, max_length=64,
        description="Features the server computes from the reading's own (serve_ml.bundles.derived); "
                    "modalities and the classifier may use them, clients do not send them.")
    modalities: dict[str, Modality] = Field(
        default_factory=dict, description="The anomaly gates, one per sensor modality; none in a classifier-only "
        "bundle, which then needs a classifier.")
    classifier: Classifier | None = None
    cascade: Cascade = Field(
        default="always",
        description="When the classifier runs: on every row ('always'), or only on the rows the gate flags "
                    "('gate_then_classify': the gate decides which rows are worth a classifier call, and the "
                    "other rows answer 'skipped'). Needs a gate and a classifier.")
    rul: RulHead | None = Field(default=None, description="A remaining-useful-life head, if any.")
    warmup: Warmup | None = None
    evaluation: Evaluation | None = Field(default=None, description="The builder's held-out figures, for "
                                          "'serve-ml bundle report'.")
    provenance: Provenance
    files: dict[str, str] = Field(description="Every file in the bundle (but this manifest) -> sha256.")

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"unknown schema_version {v}; this server reads {SCHEMA_VERSION}")
        return v

    @field_validator("equipment_id", "power", "model_version")
    @classmethod
    def _segment(cls, v: str) -> str:
        if not is_safe_segment(v):
            raise ValueError(f"{v!r} is not a safe path segment")
        return v

    @field_validator("modalities")
    @classmethod
    def _modality_names(cls, v: dict[str, Modality]) -> dict[str, Modality]:
        for name in v:
            if not is_safe_segment(name):
                raise ValueError(f"modality name {name!r} is not a safe identifier")
        return v

    @field_validator("files")
    @classmethod
    def _files(cls, v: dict[str, str]) -> dict[str, str]:
        for name, digest in v.items():
            if not is_safe_segment(name) or name == MANIFEST_NAME:
                raise ValueError(f"file name {name!r} is not a safe path segment")
            if not _SHA256.match(digest):
                raise ValueError(f"sha256 of {name!r} is not 64 lowercase hex digits")
        return v

    @model_validator(mode="after")
    def _cross_check(self) -> Manifest:
        low, high = self.power_range_kw
        if not (math.isfinite(low) and low >= 0 and high > low):
            raise ValueError("power_range_kw must be [low, high) with 0 <= low < high")
        if not self.modalities and self.classifier is None:
            raise ValueError("a bundle needs at least one modality or a classifier")
        if self.cascade == "gate_then_classify" and not (self.modalities and self.classifier):
            raise ValueError("cascade 'gate_then_classify' needs both a gate (a modality) and a classifier")
        referenced = {m.weights for m in self.modalities.values()}
        if self.classifier:
            referenced.add(self.classifier.file)
        if self.warmup:
            referenced.add(self.warmup.file)
        if self.rul:
            referenced.add(self.rul.file)
        if self.evaluation:
            referenced.add(self.evaluation.file)
        check_order(self.derived)
        missing = referenced - set(self.files)
        if missing:
            raise ValueError(f"files referenced but not listed in 'files': {sorted(missing)}")
        unreferenced = set(self.files) - referenced
        if unreferenced:
            raise ValueError(f"files listed but not used by any model: {sorted(unreferenced)}")
        return self

    @property
    def all_features(self) -> list[str]:
        """What a reading may carry: the models' features, derived ones replaced by
        their inputs."""
        derived = {d.name for d in self.derived}
        seen: dict[str, None] = {}
        for m in self.modalities.values():
            seen.update(dict.fromkeys(m.features))
        if self.classifier:
            seen.update(dict.fromkeys(self.classifier.features))
        if self.rul:
            seen.update(dict.fromkeys(self.rul.features))
        seen.update(dict.fromkeys(raw_inputs(self.derived)))
        return [f for f in seen if f not in derived]
