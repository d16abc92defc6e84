"""The one settings object, read from ``SERVE_ML_*`` environment variables.

Build it once at a process edge (CLI, app builder, test fixture) with
``Settings()`` and pass it in explicitly; nothing reads the environment at import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_DIR.parent
"""The checkout when running from one; the installed package's parent otherwise."""
DEMO_BUNDLES = PACKAGE_DIR / "demo_bundles"
"""The demo fleet, shipped inside the package (what ``make up`` serves by default)."""
# Never written to state files, deployment args or logs.
SECRET_FIELDS = frozenset({"admin_token", "admin_token_file", "read_token", "operator_token", "jwt_secret"})
MIN_TOKEN_CHARS = 16
"""A bearer token shorter than this is refused: guessable over the network."""


def in_checkout() -> bool:
    """Running from a source checkout (the package beside its pyproject.toml)."""
    return (REPO_ROOT / "pyproject.toml").is_file()


def default_bundle_root() -> Path:
    """The demo bundles shipped in the package."""
    return DEMO_BUNDLES


def default_state_dir() -> Path:
    """``.serve-ml/`` of the checkout; installed, ``$XDG_STATE_HOME/serve-ml``
    (``~/.local/state/serve-ml``): never inside the installed package."""
    if in_checkout():
        return REPO_ROOT / ".serve-ml"
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "serve-ml"


class Settings(BaseSettings):
    """serve-ml settings. Every field is ``SERVE_ML_<NAME>`` unless noted."""

    model_config = SettingsConfigDict(
        env_prefix="SERVE_ML_", extra="forbid", use_attribute_docstrings=True, frozen=True,
        populate_by_name=True
    )

    root: Path = Field(default_factory=default_bundle_root)
    """Bundle root laid out as ``<root>/<equipment_id>/<power>/<model_version>/``."""

    enable_xgb: bool = False
    """Run a bundle's XGBoost fault classifier (``xgb.json``) when it has one."""

    http_host: str = "127.0.0.1"
    """Address the HTTP ingress binds to."""

    http_port: int = Field(default=8000, ge=1, le=65535)
    """Port of the HTTP ingress (HAProxy takes it when enabled)."""

    max_bulk_rows: int = Field(default=10_000, ge=1)
    """Largest bulk request, in readings; larger requests get HTTP 413."""

    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest HTTP request body, in bytes; larger bodies get HTTP 413."""

    request_timeout_s: float = Field(default=30.0, gt=0)
    """Server-side deadline for one request through the scoring graph."""

    equipment_deadline_s: float = Field(default=5.0, gt=0)
    """An equipment deployment that has not answered within this is given up on and the
    request is scored in the ingress instead (same code, same bundles). A replica on a
    node that was lost does not fail its calls: they hang until Ray notices the node is
    gone (~30 s); this bounds what a client sees. Above any healthy latency."""

    state_dir: Path = Field(default_factory=default_state_dir)
    """Where ``serve-ml up`` keeps its state file, logs and embedded services' data."""

    metrics_port: int = Field(default=8080, ge=1, le=65535)
    """Port where Ray's metrics agent serves Prometheus metrics (``serve-ml up``)."""

    dashboard_port: int = Field(default=8265, ge=1, le=65535)
    """Ray dashboard port (``serve status`` / ``serve deploy`` talk to it)."""

    ray_address: str | None = None
    """Existing Ray cluster to join (``auto`` or ``host:port``); default: start a local one."""

    ray_auth: bool = True
    """Token authentication on the local Ray cluster ``serve-ml up`` starts
    (``RAY_AUTH_MODE=token``): a fresh token per start in ``<state_dir>/ray-auth-token``
    (mode 0600). Ray's GCS, raylet and worker ports run code for whoever calls them:
    without it, any local user (any host, with ``ray_loopback`` off) can."""

    ray_loopback: bool = True
    """Keep every listener of the local Ray cluster ``serve-ml up`` starts on loopback
    (GCS, raylet, workers, agents, HAProxy's stats and metrics, the replicas' gRPC):
    a single-machine cluster. Set false to let other nodes join it (then firewall it;
    the token still guards Ray's ports). A cluster joined through ``ray_address``
    keeps its own set-up."""

    haproxy: bool = True
    """Start Ray with Ray Serve's HAProxy ingress (``RAY_SERVE_ENABLE_HA_PROXY``)."""

    throughput_optimized: bool = True
    """Start Ray with ``RAY_SERVE_THROUGHPUT_OPTIMIZED`` (direct ingress, gRPC handles)."""

    ingress_drain_s: float = Field(default=5.0, ge=0, le=300)
    """How long a stopping ingress replica keeps accepting connections so HAProxy can
    take it out of rotation (``RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S`` of the
    local cluster ``serve-ml up`` starts). Ray's default, 30 s, is sized for load
    balancers on other hosts; the HAProxy on the same machine deregisters a replica
    within a second or two and retries a refused connection on another replica, so
    waiting longer only delays every stop. Raise it when another load balancer sits
    in front of the ingress."""

    min_replicas: int = Field(default=1, ge=0)
    """Default autoscaling floor of every equipment deployment."""

    max_replicas: int = Field(default=2, ge=1)
    """Default autoscaling ceiling of every equipment deployment."""

    target_ongoing_requests: float = Field(default=8.0, gt=0)
    """Autoscaling target of in-flight requests per equipment replica."""

    max_ongoing_requests: int = Field(default=64, ge=1)
    """In-flight requests one replica accepts before the router queues."""

    max_queued_requests: int = Field(default=256, ge=-1)
    """Queued requests per deployment before clients get 503 (-1: unbounded)."""

    retry_after_s: int = Field(default=1, ge=0, le=3600)
    """``Retry-After`` seconds on every 503 a full queue answers (ingress or equipment)."""

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "SERVE_ML_DATABASE_URL")
    )
    """PostgreSQL URL (env ``DATABASE_URL``); unset: an embedded server is started."""

    kafka_bootstrap: str | None = Field(
        default=None, validation_alias=AliasChoices("KAFKA_BOOTSTRAP", "SERVE_ML_KAFKA_BOOTSTRAP")
    )
    """Kafka bootstrap servers (env ``KAFKA_BOOTSTRAP``); unset: embedded Tansu is started."""

    features_topic: str = "serve-ml.features"
    """Kafka topic of sensor readings (JSON, keyed by equipment id)."""

    store_http_predictions: bool = False
    """Store what ``/predict`` and ``/predict/bulk`` score like stream readings: they go
    onto the features topic, pinned to the version that answered, and the scorers
    write them to the same tables and raise the same alarms. Needs the broker
    (``KAFKA_BOOTSTRAP``, or the one ``serve-ml up`` starts); a request whose readings
    the broker does not acknowledge is a 503."""

    alerts_topic: str = "serve-ml.alerts"
    """Kafka topic the outbox relay publishes alert events to."""

    dead_letter_topic: str = "serve-ml.features.dlq"
    """Kafka topic for malformed readings: original bytes plus a ``reason`` header."""

    consumer_group: str = "serve-ml-scorer"
    """Kafka consumer group of the stream scorer actors."""

    stream_consumers: int = Field(default=2, ge=0, le=16)
    """Stream scorer actors in the consumer group (0: no stream scoring). Each takes a
    share of the features topic's 4 partitions; what one and two commit on a 2-core
    machine is in BENCHMARKS.md (``serve-ml bench stream``)."""

    batch_max_records: int = Field(default=10_000, ge=1, le=100_000)
    """Largest micro-batch the stream scorer takes from Kafka. Bigger batches spread the
    per-transaction cost (round trips, WAL flush) over more readings; at low rates
    batches stay small anyway (``batch_wait_ms`` bounds them)."""

    batch_wait_ms: int = Field(default=100, ge=1)
    """Longest wait for a micro-batch to fill; also the longest a broker may hold a
    fetch that found nothing new (Tansu answers such a fetch only when that wait runs
    out, so it bounds the delivery latency of a quiet stream)."""

    stream_stall_timeout_s: float = Field(default=20.0, gt=0)
    """A stream scorer that is behind (records waiting, or a partition with no position
    or one past the log end) yet takes no record for this long, or whose offset commit
    goes unanswered this long, rebuilds its Kafka clients and resumes from the
    committed offsets. Kafka clients can come out of a broker restart fetching nothing
    without noticing."""

    max_message_bytes: int = Field(default=64 * 1024, ge=256)
    """Largest accepted stream message; larger ones are dead-lettered."""

    max_reading_age_s: float = Field(default=365 * 86400.0, gt=0)
    """Readings older than this are dead-lettered (bounds time partitions created)."""

    max_reading_future_s: float = Field(default=86400.0, gt=0)
    """Readings further in the future than this are dead-lettered."""

    alert_resolve_after: int = Field(default=10, ge=1)
    """Consecutive normal predictions that resolve an open alert."""

    retention_days: int = Field(default=30, ge=1)
    """Readings, predictions and delivered outbox rows older than this many days are
    dropped (TimescaleDB retention policy, or whole daily partitions on plain
    PostgreSQL); older readings are dead-lettered on arrival."""

    flatline_readings: int = Field(default=30, ge=0)
    """A sensor repeating the same value this many readings in a row is flatlined: a
    sensor-fault alarm, and the value is kept out of the model (0: no flatline check)."""

    rollup_retention_days: int = Field(default=365, ge=1)
    """Hourly rollups (aggregates) older than this are dropped; never before the readings."""

    mqtt_url: str | None = None
    """MQTT broker (``mqtt://host:port``) for the bridge; unset: no MQTT bridge."""

    mqtt_topic: str = "serve-ml/+/features"
    """MQTT topic filter; the ``+`` level is the equipment id."""

    simulate_machines: str = ("press-02:7.5kW:normal+spike=vibration_rms_mm_s,"
                              "pump-03:5.5kW:overstrain+drop=current_a,mill-01:7.5kW:normal:ai4i+flatline=torque_nm,"
                              "spindle-04:7.5kW:run_to_failure")
    """Machines ``make up`` simulates: ``equipment:power[:profile[:ai4i]][+quirk=sensor...]``,
    comma-separated (quirks: flatline, drop, spike; profile ``run_to_failure`` wears a
    machine out, unit after unit; see ``pipelines.simulator``)."""

    simulate_rate_hz: float = Field(default=20.0, ge=0)
    """Readings per second per simulated machine in ``make up`` (0: no simulator)."""

    admin_token: SecretStr | None = None
    """Bearer token for management endpoints (sync, activate, rollback, upload); unset: refused."""

    admin_token_file: Path | None = None
    """File holding the admin token (read at start; wins over ``SERVE_ML_ADMIN_TOKEN``)."""

    read_token: SecretStr | None = None
    """Bearer token for predict and read endpoints; unset: they are open."""

    operator_token: SecretStr | None = None
    """Bearer token for operator actions (equipment, thresholds, alarm ack/clear); the
    admin token may take them too. Unset, and no admin token: refused."""

    rate_limit_per_s: float = Field(default=0.0, ge=0)
    """Scoring requests per second one client may make (token bucket per bearer token,
    or per address without one; each ingress replica counts its own); 0: no limit.
    Over it: 429 with Retry-After."""

    rate_limit_burst: int = Field(default=0, ge=0)
    """Requests a client may make at once before the rate applies; 0: one second's worth."""

    otlp_endpoint: str | None = None
    """OpenTelemetry collector (OTLP/HTTP, e.g. ``http://otel-collector:4318``): every
    process exports its spans to ``<endpoint>/v1/traces``; unset: no tracing."""

    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object per log line, with the trace and span ids."""

    jwt_secret: SecretStr | None = None
    """HS256 secret for bearer JWTs (at least 32 characters); with it, or a JWKS file,
    a JWT from the identity system is accepted beside the static tokens."""

    jwt_jwks_file: Path | None = None
    """JSON Web Key Set file with the identity system's public keys (RS256 or ES256),
    chosen by the token's ``kid``."""

    jwt_issuer: str | None = None
    """Required ``iss`` of a JWT; unset: not checked."""

    jwt_audience: str | None = None
    """Required ``aud`` of a JWT; unset: not checked."""

    jwt_role_claim: str = "role"
    """Claim holding the role (``viewer``, ``operator``, ``admin``), a string or a list
    (the strongest counts); dotted for a nested claim, e.g. ``realm_access.roles``."""

    jwt_leeway_s: float = Field(default=30.0, ge=0, le=600)
    """Clock skew allowed when checking ``exp`` and ``nbf``."""

    ws_max_per_client: int = Field(default=16, ge=1, le=100_000)
    """WebSocket connections one client address may hold at once (more: close code
    4429). Raise it for a gateway that fans many users in from one address."""

    ws_max_connections: int = Field(default=4096, ge=1, le=1_000_000)
    """WebSocket connections one replica of the live application holds at once (its
    ``max_ongoing_requests``: Serve counts an open socket as a request in flight);
    beyond it (and ``max_queued_requests`` waiting) a connection is refused with 503. The
    HTTP ingress's slots are its own (``deployments.live_gateway``)."""

    notifications_file: Path | None = None
    """YAML file of notification sinks (Slack-compatible webhook, signed webhook,
    SMTP email) and their routing rules; unset: no notifications. It holds the sinks'
    secrets, so it is read where it is used, never passed around."""

    stale_after_s: float = Field(default=300.0, gt=0)
    """An equipment with no reading for this long shows ``no_data`` as its status."""

    def admin_secret(self) -> str | None:
        """The admin token in force, or None when management is disabled."""
        if self.admin_token_file is not None:
            text = self.admin_token_file.read_text().strip()
            return _checked_token(text, f"the admin token file {self.admin_token_file}") if text else None
        return self.admin_token.get_secret_value() if self.admin_token else None

    def accepted_age_s(self) -> float:
        """How old a reading may be and still be stored: no older than retention keeps."""
        return min(self.max_reading_age_s, self.retention_days * 86400.0)

    def without_secrets(self) -> Settings:
        """A copy with every token removed: what actors get as an argument (Ray keeps
        actor arguments in the GCS and shows them in its dashboard)."""
        return self.model_copy(update=dict.fromkeys(SECRET_FIELDS))

    @field_validator("jwt_secret")
    @classmethod
    def _jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("SERVE_ML_JWT_SECRET is shorter than 32 characters (RFC 7518: an HS256 key is at "
                             "least 256 bits)")
        return value

    @field_validator("admin_token", "read_token", "operator_token")
    @classmethod
    def _token(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None:
            _checked_token(value.get_secret_value(), f"SERVE_ML_{(info.field_name or '').upper()}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"SERVE_ML_MIN_REPLICAS ({self.min_replicas}) is above SERVE_ML_MAX_REPLICAS "
                             f"({self.max_replicas})")
        return self

    @field_validator("root", "state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()


def _checked_token(token: str, where: str) -> str:
    if not token.strip():
        raise ValueError(f"{where} is set but empty: unset it, or set a token of at least {MIN_TOKEN_CHARS} "
                         "characters (an empty token must not silently open the API)")
    if len(token.strip()) < MIN_TOKEN_CHARS:
        raise ValueError(f"{where} is shorter than {MIN_TOKEN_CHARS} characters")
    return token.strip()
