"""Notification sinks and their routing rules, read from one YAML file
(``SERVE_ML_NOTIFICATIONS_FILE``): secrets (webhook signing keys, SMTP passwords)
stay in that file, never in settings passed to actors.

.. code-block:: yaml

    sinks:
      - name: maintenance-slack
        kind: slack
        url: https://hooks.slack.com/services/T000/B000/XXXX
        route: {min_severity: major, locations: [site-a]}
      - name: cmms
        kind: webhook
        url: https://cmms.example/hooks/serve-ml
        secret: a-long-random-signing-key
        route: {types: [threshold, sensor_fault], events: [opened, cleared, resolved]}
      - name: night-shift
        kind: email
        host: smtp.example
        port: 587
        starttls: true
        sender: serve-ml@example
        to: [night-shift@example]
        route: {min_severity: critical}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from serve_ml.operations.alarm_store import SEVERITY_RANK, AlarmType, Severity

Event = Literal["opened", "severity_changed", "acknowledged", "cleared", "resolved"]
_STRICT = ConfigDict(extra="forbid", frozen=True)


class Route(BaseModel):
    """Which alarm transitions a sink receives (all conditions must hold)."""

    model_config = _STRICT

    min_severity: Severity = Field(default="warning", description="Lowest severity sent (warning < minor < major < critical).")
    types: list[AlarmType] | None = Field(default=None, description="Alarm types sent; unset: all.")
    locations: list[str] | None = Field(
        default=None, description="Location paths (site-a, site-a/hall-1); equipment at or under one of them. "
                                  "Unset: everywhere, unregistered equipment included.")
    events: list[Event] = Field(default=["opened", "severity_changed", "cleared", "resolved"],
                                description="Transitions sent.")

    def matches(self, event: dict[str, Any], location: tuple[str, ...] | None) -> bool:
        if event.get("event") not in self.events:
            return False
        if SEVERITY_RANK.get(event.get("severity", ""), -1) < SEVERITY_RANK[self.min_severity]:
            return False
        if self.types is not None and event.get("type") not in self.types:
            return False
        if self.locations is not None:
            if location is None:
                return False
            return any(location[:len(p)] == p for p in (tuple(x for x in loc.split("/") if x)
                                                       for loc in self.locations))
        return True


class _Sink(BaseModel):
    model_config = _STRICT

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$", description="Unique sink name.")
    route: Route = Field(default_factory=Route, description="What this sink receives.")
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="Per-attempt timeout.")


class WebhookSink(_Sink):
    """Any HTTP endpoint: the event JSON, signed with HMAC-SHA256 over
    ``<timestamp>.<body>`` (headers ``X-Serve-ML-Timestamp``, ``X-Serve-ML-Signature:
    sha256=<hex>``), so the receiver can check origin and freshness."""

    kind: Literal["webhook"]
    url: str = Field(pattern=r"^https?://", description="Where the event is POSTed.")
    secret: SecretStr = Field(description="Signing key, at least 16 characters.")

    @field_validator("secret")
    @classmethod
    def _long(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 16:
            raise ValueError("a webhook secret needs at least 16 characters")
        return v


class SlackSink(_Sink):
    """A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat): ``{"text": ...}``."""

    kind: Literal["slack"]
    url: str = Field(pattern=r"^https?://", description="The incoming-webhook URL.")


class EmailSink(_Sink):
    """SMTP email, one message per transition."""

    kind: Literal["email"]
    host: str = Field(description="SMTP server.")
    port: int = Field(default=25, ge=1, le=65535, description="SMTP port.")
    starttls: bool = Field(default=False, description="Upgrade the connection with STARTTLS.")
    username: str | None = Field(default=None, description="SMTP login, when the server wants one.")
    password: SecretStr | None = Field(default=None, description="SMTP password.")
    sender: str = Field(description="From address.")
    to: list[str] = Field(min_length=1, description="Recipients.")


Sink = Annotated[WebhookSink | SlackSink | EmailSink, Field(discriminator="kind")]


class NotificationsConfig(BaseModel):
    model_config = _STRICT

    sinks: list[Sink] = Field(default_factory=list, description="Where alarm transitions go.")
    max_attempts: int = Field(default=8, ge=1, le=100, description="Attempts per delivery before it is failed.")
    backoff_initial_s: float = Field(default=1.0, gt=0, description="Wait after a first failed attempt.")
    backoff_max_s: float = Field(default=300.0, gt=0, description="Longest wait between attempts.")
    fault_after_failures: int = Field(default=3, ge=1, description="Failed attempts in a row that raise a "
                                                                   "pipeline-fault alarm for the sink.")
    max_event_age_s: float = Field(default=3600.0, gt=0, description="Events older than this when first "
                                                                      "routed are not notified (a notifier that "
                                                                      "was off does not flood its sinks).")

    @field_validator("sinks")
    @classmethod
    def _unique(cls, sinks: list[Any]) -> list[Any]:
        names = [s.name for s in sinks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sink names must be unique: {', '.join(dupes)}")
        return sinks

    def backoff_s(self, attempts: int) -> float:
        return min(self.backoff_max_s, self.backoff_initial_s * 2 ** max(0, attempts - 1))


def load_config(path: Path) -> NotificationsConfig:
    """Read and validate the file; errors name the file and the field."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    try:
        return NotificationsConfig.model_validate(doc)
    except ValidationError as exc:
        # Field and reason only: pydantic's own text repeats the input, secrets included.
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: {problems}") from None


def summary(event: dict[str, Any]) -> str:
    """One line for people: what happened to which alarm, where, and why."""
    what = {"opened": "opened", "severity_changed": f"now {event.get('severity')}",
            "acknowledged": "acknowledged", "cleared": "cleared", "resolved": "resolved"}.get(event.get("event", ""),
                                                                                           event.get("event", ""))
    kind = str(event.get("type", "alarm")).replace("_", " ")
    source = f" {event['source']}" if event.get("source") else ""
    line = f"[{str(event.get('severity', '')).upper()}] {kind}{source} alarm {what} on {event.get('equipment_id')}"
    detail = event.get("detail") or {}
    if "value" in detail and detail.get("limits"):
        line += f": {detail.get('sensor')} = {detail['value']:g} (limits {detail['limits']})"
    elif event.get("fault_label"):
        line += f": {event['fault_label']}"
    if event.get("actor"):
        line += f" by {event['actor']}"
    if event.get("comment"):
        line += f" ({event['comment']})"
    return line + f" [alarm {event.get('alert_id')}]"
