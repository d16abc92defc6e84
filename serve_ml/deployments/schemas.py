"""HTTP request and response models (the OpenAPI contract at ``/docs``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field, model_validator, with_config
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from serve_ml.core.reading import BAD_FEATURES, MAX_FEATURES, MAX_NAME_CHARS

# The reading contract's limits (serve_ml.core.reading); its wording is put on
# pydantic's refusals where the API translates them.
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
# Strict: a JSON string or boolean is a type error (422), not silently coerced.
# Non-finite values pass here: the scorer names them, per row on the bulk paths.
Number = Annotated[float, Field(strict=True)]
Features = Annotated[dict[Name, Number], Field(min_length=1, max_length=MAX_FEATURES)]
MAX_WINDOW_STEPS = 4096
BOTH_FORMS = "give either features (one reading) or readings (a window, oldest first), not both"


class PredictRequest(BaseModel):
    """One reading to score."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "equipment_id": "press-02", "features": {
            "air_temp_k": 300.1, "process_temp_k": 310.2, "speed_rpm": 1500, "torque_nm": 45.6,
            "tool_wear_min": 80, "vibration_rms_mm_s": 1.7, "current_a": 12.3}}]})

    equipment_id: Name = Field(description="Equipment id, the first level of the bundle root.")
    power: Name | None = Field(default=None, description="Power class, e.g. '7.5kW'; omitted: chosen automatically.")
    model_version: Name | None = Field(default=None, description="Pin a version; omitted: the live version.")
    features: Features | None = Field(default=None, description="Feature name -> value. Either this or `readings`.")
    readings: list[Features] | None = Field(
        default=None, min_length=1, max_length=MAX_WINDOW_STEPS,
        description="A window of consecutive readings of one machine, oldest first, each with the same feature "
                    "names: for a bundle with sequence modalities, which read its last `window_steps` readings "
                    "(fewer is a 422 saying how many are needed); every other part of the bundle reads the last "
                    "reading, and the verdict is the last reading's. Either this or `features`.")

    @model_validator(mode="after")
    def _one_form(self) -> PredictRequest:
        if self.features is None and self.readings is None:
            raise ValueError(f"features: {BAD_FEATURES} (or readings: a window of them, oldest first)")
        if self.features is not None and self.readings is not None:
            raise ValueError(BOTH_FORMS)
        if self.readings is not None:
            names = self.readings[-1].keys()
            for i, r in enumerate(self.readings):
                if r.keys() != names:
                    raise ValueError(f"readings[{i}] has features {sorted(r)}, the last reading "
                                     f"{sorted(names)}: every reading of a window needs the same names")
        return self

    def last(self) -> dict[str, float]:
        """The reading the verdict is for: the only one, or the window's last."""
        return self.features if self.features is not None else self.readings[-1]  # type: ignore[index]


@with_config(ConfigDict(extra="forbid"))
class BulkReading(TypedDict):
    """One reading of a bulk request (same fields and rules as a single predict).

    A TypedDict rather than a model: validating 1000 of them costs 0.7 ms instead of
    4.7 ms, with the same constraints and error messages.
    """

    equipment_id: Name
    power: NotRequired[Name | None]
    model_version: NotRequired[Name | None]
    features: Features


@with_config(ConfigDict(extra="forbid"))
class BulkWindow(TypedDict):
    """One window of a bulk request: consecutive readings of one machine, oldest first,
    each with the same feature names (as ``readings`` of a single predict); its result
    is the last reading's verdict."""

    equipment_id: Name
    power: NotRequired[Name | None]
    model_version: NotRequired[Name | None]
    readings: Annotated[list[Features], Field(min_length=1, max_length=MAX_WINDOW_STEPS)]


BULK_FORMS = ("BulkReading", "BulkWindow")  # how pydantic names the union's members in a location


class BulkRequest(BaseModel):
    """Many readings, scored in one round trip; results come back in the same order."""

    model_config = ConfigDict(extra="forbid")

    # Left to right: a plain reading is validated once, in C, as before windows existed
    # (a discriminator would call Python per item). An item that fits neither form is
    # refused with the problems of the form its keys chose (``api.refused_form``).
    readings: list[Annotated[BulkReading | BulkWindow, Field(union_mode="left_to_right")]] = Field(
        min_length=1, description="Readings (or windows of readings, for sequence bundles), any mix of equipment.")


class ColumnsRequest(BaseModel):
    """Many readings of one equipment as columns: ``columns[feature][row]``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "equipment_id": "press-02", "power": "7.5kW", "columns": {
            "air_temp_k": [300.1, 300.4], "process_temp_k": [310.2, 310.9]}}]})

    equipment_id: Name = Field(description="Equipment id; every row belongs to it.")
    power: Name | None = Field(default=None, description="Power class; omitted: chosen per row automatically.")
    model_version: Name | None = Field(default=None, description="Pin a version; omitted: the live version.")
    columns: dict[Name, Annotated[list[Number], Field(min_length=1)]
                  | Annotated[list[Annotated[list[Number], Field(min_length=1)]], Field(min_length=1)]] = Field(
        min_length=1, max_length=MAX_FEATURES,
        description="Feature name -> one value per row; equal lengths. For a bundle with sequence modalities "
                    "(lstm_autoencoder), one window per row instead: an array of the readings leading to the "
                    "row, oldest first, of the same length for every row and feature; the verdict is the "
                    "window's last reading's.")


class ColumnsResponse(BaseModel):
    """Output arrays in input order. ``power``/``model_version`` are one string when one
    bundle scored every row, else one per row; ``classifier`` is then one entry per
    power class with its ``rows``. Rows in ``errors`` have ``score`` null."""

    equipment_id: str
    rows: int
    power: str | list[str]
    model_version: str | list[str]
    anomaly: list[bool]
    score: list[float | None]
    modalities: dict[str, dict[str, Any]] = Field(description="name -> {threshold, error[], anomaly[]} or absent.")
    classifier: dict[str, Any] | list[dict[str, Any]]
    errors: dict[str, Any] = Field(description="Row index -> {status, error} for rows that could not be scored.")
    rul: dict[str, Any] | None = Field(default=None, description="{unit, value[], lower[], upper[]} when the "
                                       "bundle has a RUL head.")
    latency_ms: float


class ModalityResult(BaseModel):
    status: Literal["scored", "absent", "sensor_fault"] = Field(
        description="scored; absent (its sensors not sent, or some missing: see missing); sensor_fault (the "
                    "stream's data-quality gate kept a faulty value out of it).")
    threshold: float
    error: float | None = Field(default=None, description="Mean squared reconstruction error.")
    anomaly: bool | None = None
    missing: list[str] | None = Field(default=None, description="Sensors of this modality the reading lacked.")


class ThresholdBreach(BaseModel):
    sensor: str
    level: Literal["warning", "critical"]
    value: float
    limits: dict[str, float] = Field(description="The limits that apply (see GET /equipment/{id}/thresholds).")
    scope: Literal["equipment", "type", "location"]
    target: str
    index: int | None = Field(default=None, description="Bulk: the reading's position in the request.")


class ClassifierResult(BaseModel):
    status: Literal["ran", "skipped"]
    reason: str | None = Field(default=None, description="Why it was skipped.")
    label: str | None = None
    probabilities: dict[str, float] | None = None


class RulResult(BaseModel):
    value: float = Field(description="Predicted remaining useful life, in [0, the bundle's cap].")
    unit: Literal["cycles", "hours", "minutes"]
    lower: float = Field(description="Lower end of the interval from held-out units' residuals.")
    upper: float = Field(description="Upper end of that interval.")


class PredictResponse(BaseModel):
    equipment_id: str
    power: str
    model_version: str
    anomaly: bool
    score: float = Field(description="Max over scored modalities of error / threshold; > 1 is anomalous.")
    modalities: dict[str, ModalityResult]
    classifier: ClassifierResult
    rul: RulResult | None = Field(default=None, description="Remaining useful life, when the bundle has a RUL "
                                  "head (null when the reading lacks the head's features).")
    thresholds: list[ThresholdBreach] | None = Field(
        default=None, description="Raw thresholds breached, worst first; present (maybe empty) when the "
                                  "equipment has limits (operations layer; needs a database).")
    latency_ms: float | None = Field(
        default=None, description="Scoring latency inside the server (bulk: once, at the top level).")


class ErrorBody(BaseModel):
    error: str = Field(description="Error type.")
    message: str = Field(description="What is wrong, naming the offending input.")
    detail: Any = None


class V2ErrorBody(BaseModel):
    """The Open Inference Protocol's error body (``/v2`` routes)."""

    error: str = Field(description="What is wrong, naming the offending input.")
    code: str | None = Field(default=None, description="Error type, as in the JSON API's ``error``.")
    detail: Any = None


class BulkItemError(BaseModel):
    status: int
    error: ErrorBody


class BulkResponse(BaseModel):
    results: list[PredictResponse | BulkItemError]
    errors: int = Field(description="How many readings failed (each carries its own error).")
    thresholds: list[ThresholdBreach] | None = Field(
        default=None, description="Raw thresholds breached, each with the reading's index; present when any "
                                  "equipment of the request has limits.")
    latency_ms: float


class SyncResponse(BaseModel):
    generation: int
    added: list[str]
    updated: list[str]
    removed: list[str]
    unchanged: list[str]
    rejected: list[dict[str, str]]
    live_changes: list[dict[str, Any]]
    deployments: dict[str, Any] = Field(
        default_factory=dict, description="Dedicated equipment deployments being added or drained and removed "
        "(a background redeploy of the graph), or why the graph is not managed here.")


class ChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500, description="Why; recorded with the change.")


class ActivateRequest(ChangeRequest):
    model_version: Name = Field(description="The version to make live.")
    pin: bool = Field(default=True, description="Keep it live even when newer versions appear.")
