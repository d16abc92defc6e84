"""What ``build_bundle`` builds: the build spec, validated before any training."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_ml.bundles.derived import DerivedFeature
from serve_ml.bundles.manifest import PowerFromFeature, PowerFromTorqueSpeed
from serve_ml.bundles.rul_training import RulSpec
from serve_ml.bundles.thresholds import Quantile, ThresholdRule

Progress = Callable[[str], None]
Inputs = Callable[[np.ndarray], dict[str, np.ndarray]]  # rows -> the bundle's inputs for them (values or windows)

CASCADE_F1_TOLERANCE = 0.01
"""'auto' keeps the gate in front of the classifier unless that costs more than this
much binary F1 (fault vs none) on the rows the builder can judge fairly: held-out
normal rows and every fault row, with the classifier's out-of-fold predictions."""




class BuildSpec(BaseModel):
    """What to build. Validated before any training starts."""

    model_config = ConfigDict(extra="forbid")

    equipment_id: str
    power: str
    model_version: str
    power_range_kw: tuple[float, float]
    default_power: bool = False
    power_source: PowerFromFeature | PowerFromTorqueSpeed | None = None
    modalities: dict[str, list[str]] = Field(
        default_factory=dict, description="Gates: modality -> features. None: a classifier-only bundle.")
    kind: str = Field(default="dense_autoencoder", description="Model kind of the modalities (serve_ml.bundles.kinds).")
    modality_kinds: dict[str, str] = Field(default_factory=dict, description="Per-modality kinds overriding "
                                           "'kind': dense and sequence modalities can share a bundle.")
    window_steps: int = Field(default=30, ge=2, le=4096, description="Readings per window, for a sequence kind "
                              "(windows are consecutive rows of one unit in time order, file order without a "
                              "time column).")
    centre_windows: bool = Field(default=False, description="Sequence kinds judge movement within each window, "
                                 "not its level (kinds.sequence.SequenceAutoencoder.centre).")
    hidden: dict[str, list[int]] = Field(default_factory=dict, description="Per-modality encoder widths.")
    classifier: bool = True
    classifier_features: list[str] | None = Field(
        default=None, description="Classifier inputs (raw or derived); default: every modality feature.")
    derived: list[DerivedFeature] = Field(default_factory=list, description="Features the bundle computes.")
    classifier_depth: int = Field(default=4, ge=1, le=12, description="XGBoost max_depth.")
    classifier_rounds: int = Field(default=150, ge=1, le=5000,
                                   description="XGBoost boosting rounds (random forest: trees).")
    classifier_mode: Literal["boosted", "random_forest"] = Field(
        default="boosted", description="Gradient boosting, or XGBoost's random-forest mode (one round of "
        "parallel trees on bootstrap rows); both saved as XGBoost JSON.")
    cascade: Literal["auto", "always", "gate_then_classify"] = Field(
        default="auto", description="When the classifier runs (manifest 'cascade'). 'auto': gate_then_classify, "
        "unless the gate would hide faults the classifier finds (see CASCADE_F1_TOLERANCE).")
    split: Literal["random", "time", "unit"] = Field(
        default="random", description="How rows are held out: at random; in consecutive blocks of time "
        "(train, calibration, evaluation: 70/15/15 % of rows in time order); or by unit (whole machines, "
        "70/15/15 % of units). 'time' and 'unit' need the matching column (datasets.Ordering).")
    normal_label: str = Field(default="none", description="The label of normal rows.")
    rul: RulSpec | None = Field(default=None, description="A remaining-useful-life head, trained from "
                                "run-to-failure data (needs the unit split).")
    seed: int = 0
    epochs: int = Field(default=60, ge=1)
    batch_size: int = Field(default=256, ge=8)
    threshold_rule: ThresholdRule = Field(default_factory=Quantile,
                                          description="How each gate's threshold is set (bundles.thresholds).")
    warmup_rows: int = Field(default=16, ge=1)

    @model_validator(mode="after")
    def _something_to_build(self) -> BuildSpec:
        if not self.modalities and not self.classifier:
            raise ValueError("nothing to build: give at least one modality, or a classifier")
        if not self.modalities and not self.classifier_features:
            raise ValueError("a classifier-only bundle needs its classifier features named")
        if self.rul is not None and self.split != "unit":
            raise ValueError("a RUL head is judged on units it never saw: it needs split 'unit'")
        if self.cascade == "gate_then_classify" and not (self.modalities and self.classifier):
            raise ValueError("cascade gate_then_classify needs a gate (a modality) and a classifier")
        return self
