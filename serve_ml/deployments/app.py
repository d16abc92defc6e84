"""The typed application builder behind ``serve_config.yaml``'s ``import_path``.

``serve run serve_config.yaml`` / ``serve deploy serve_config.yaml`` call
:func:`build_app` with the ``args`` block, validated against :class:`AppArgs`.
Fields left unset fall back to :class:`serve_ml.core.settings.Settings` (env vars).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray.serve import Application

from serve_ml.bundles.manifest import is_safe_segment
from serve_ml.core.settings import Settings
from serve_ml.deployments.equipment import EquipmentModel
from serve_ml.deployments.ingress import Ingress, IngressArgs
from serve_ml.deployments.versioning import code_version


class Autoscaling(BaseModel):
    """Ray Serve autoscaling settings for one deployment (units in the names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int | None = Field(default=None, ge=0, description="Floor; default SERVE_ML_MIN_REPLICAS.")
    max_replicas: int | None = Field(default=None, ge=1, description="Ceiling; default SERVE_ML_MAX_REPLICAS.")
    target_ongoing_requests: float | None = Field(default=None, gt=0, description="In-flight requests per replica.")
    upscale_delay_s: float = Field(default=5.0, ge=0, description="Sustained load before adding replicas.")
    downscale_delay_s: float = Field(default=60.0, ge=0, description="Sustained idleness before removing replicas.")
    metrics_interval_s: float = Field(default=2.0, gt=0, description="How often replicas report load.")
    look_back_period_s: float = Field(default=10.0, gt=0, description="Window the load is averaged over.")

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas is not None and self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}")
        return self

    def resolve(self, s: Settings) -> dict[str, Any]:
        """With the settings' defaults filled in; a floor above the ceiling is refused,
        never silently raised (the operator asked for something else)."""
        lo = s.min_replicas if self.min_replicas is None else self.min_replicas
        hi = s.max_replicas if self.max_replicas is None else self.max_replicas
        if lo > hi:
            raise ValueError(f"autoscaling: min_replicas {lo} is above max_replicas {hi} (one of them from "
                             "SERVE_ML_MIN_REPLICAS / SERVE_ML_MAX_REPLICAS)")
        return {
            "min_replicas": lo, "max_replicas": hi,
            "target_ongoing_requests": self.target_ongoing_requests or s.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s, "downscale_delay_s": self.downscale_delay_s,
            "metrics_interval_s": self.metrics_interval_s, "look_back_period_s": self.look_back_period_s,
        }


class AppArgs(BaseModel):
    """The ``args`` block of ``serve_config.yaml``."""

    model_config = ConfigDict(extra="forbid")

    root: str | None = Field(default=None, description="Bundle root; default SERVE_ML_ROOT or the demo bundles.")
    enable_xgb: bool | None = Field(default=None, description="Run classifiers; default SERVE_ML_ENABLE_XGB.")
    fast_path: bool = Field(default=True, description="Score single readings in the ingress (no handle hop).")
    columns_fast_path_max_rows: int = Field(
        default=4096, ge=0, description="Score columnar requests up to this many rows in the ingress (no handle "
        "hop: ~1.7 ms here, more than scoring 4096 rows); 0: always on the equipment deployment.")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling, description="Default for equipment deployments.")
    equipment: dict[str, Autoscaling] = Field(default_factory=dict, description="Per-equipment overrides.")
    ingress_autoscaling: Autoscaling = Field(default_factory=Autoscaling, description="The ingress deployment.")
    max_dedicated_deployments: int = Field(
        default=4, ge=0, description="Equipment ids (sorted) that get their own deployment; the rest are "
        "scored by the ingress replicas.")
    poll_interval_s: float = Field(default=1.0, gt=0, description="How often replicas check for a sync.")
    equipment_max_ongoing_requests: int | None = Field(
        default=None, ge=1, description="Per equipment replica; default SERVE_ML_MAX_ONGOING_REQUESTS.")
    equipment_max_queued_requests: int | None = Field(
        default=None, ge=-1, description="Per equipment deployment, beyond which clients get 503; default "
        "SERVE_ML_MAX_QUEUED_REQUESTS.")
    replica_num_cpus: float = Field(
        default=0.1, ge=0, description="CPUs Ray reserves per replica. Scoring is light and I/O-bound in "
        "practice; 1.0 (Ray's default) would fit only two replicas on a 2-core node.")


def equipment_dirs(root: Path) -> list[str]:
    """Equipment ids present under the root (directory names only; no bundle is loaded)."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and is_safe_segment(p.name))


def graph_root(args: AppArgs, s: Settings) -> Path:
    """The bundle root a graph serves: ``args.root`` if set, else ``SERVE_ML_ROOT``."""
    return Path(args.root).resolve() if args.root else s.root


def dedicated_equipment(args: AppArgs, s: Settings) -> list[str]:
    """Equipment that gets its own deployment (the rest are scored by the ingress)."""
    return equipment_dirs(graph_root(args, s))[: args.max_dedicated_deployments]


HOP_LIMIT_ENV = "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"
"""Ray Serve's cap on one message between replicas over its gRPC transport (both
the replica's server and the caller's channel read it; gRPC's default is 4 MiB)."""
ANSWER_BYTES_PER_ROW = 2048
"""A generous bound on one row's share of a columnar answer (score, verdicts, one
error per modality, class probabilities, label, RUL), for :func:`hop_message_bytes`."""


def hop_message_bytes(s: Settings) -> int:
    """How large a message between the ingress and an equipment replica may be.

    A bulk request the ingress forwards carries the request's columns, and the
    answer comes back the same way; at gRPC's default 4 MiB a 100,000-row request
    (5.6 MB of float64 columns) would be refused, a 500 to the client. The cap must hold the largest
    request the ingress accepts and the answer to the most rows it accepts, with
    room for serialisation; it stays under gRPC's 2 GiB ceiling."""
    need = max(2 * s.max_request_bytes, s.max_bulk_rows * ANSWER_BYTES_PER_ROW) + (1 << 20)
    return min(max(need, 4 << 20), (1 << 31) - 1)


def build_app(args: AppArgs | dict[str, Any]) -> Application:
    """Serve's entry point (``import_path``): settings come from the environment.

    Serve validates ``args`` against a pydantic annotation only when it can resolve
    it; postponed annotations reach it as strings, so validate here as well.
    """
    return build_graph(AppArgs.model_validate(args), Settings())


def build_graph(args: AppArgs, s: Settings) -> Application:
    """The scoring graph for explicit settings (used by the launcher and tests)."""
    root = graph_root(args, s)
    enable_xgb = s.enable_xgb if args.enable_xgb is None else args.enable_xgb
    # backpressure_config: Serve's own 503 for a full ingress queue carries Retry-After too.
    common = {"max_ongoing_requests": s.max_ongoing_requests, "max_queued_requests": s.max_queued_requests,
              "backpressure_config": {"status_code": 503, "retry_after_s": s.retry_after_s},
              "ray_actor_options": {"num_cpus": args.replica_num_cpus,
                                    "runtime_env": {"env_vars": {HOP_LIMIT_ENV: str(hop_message_bytes(s))}}}}
    equipment_common = {**common}
    if args.equipment_max_ongoing_requests is not None:
        equipment_common["max_ongoing_requests"] = args.equipment_max_ongoing_requests
    if args.equipment_max_queued_requests is not None:
        equipment_common["max_queued_requests"] = args.equipment_max_queued_requests
    handles = {}
    for eq in dedicated_equipment(args, s):
        scaling = args.equipment.get(eq, args.autoscaling)
        init = ([eq], str(root), enable_xgb, args.poll_interval_s)
        # version + _internal: Serve's own escape hatch for a stable code version (versioning.py)
        handles[eq] = EquipmentModel.options(  # type: ignore[attr-defined]
            name=f"equipment-{eq}", autoscaling_config=scaling.resolve(s), version=code_version(*init),
            _internal=True, **equipment_common
        ).bind(*init)
    ingress_args = IngressArgs(
        root=str(root), enable_xgb=enable_xgb, fast_path=args.fast_path,
        columns_fast_path_max_rows=args.columns_fast_path_max_rows, max_bulk_rows=s.max_bulk_rows,
        max_request_bytes=s.max_request_bytes, request_timeout_s=s.request_timeout_s, retry_after_s=s.retry_after_s,
        equipment_deadline_s=s.equipment_deadline_s,
        poll_interval_s=args.poll_interval_s, database_url=s.database_url, alerts_topic=s.alerts_topic,
        stale_after_s=s.stale_after_s, store_to=http_store_bootstrap(s), features_topic=s.features_topic,
        ws_max_per_client=s.ws_max_per_client, ws_max_connections=ingress_ws_max_connections(s),
        rate_limit_per_s=s.rate_limit_per_s, kafka_bootstrap=s.kafka_bootstrap, dead_letter_topic=s.dead_letter_topic,
        rate_limit_burst=s.rate_limit_burst,
    )
    ingress_init = ingress_args.model_dump()
    return Ingress.options(autoscaling_config=args.ingress_autoscaling.resolve(s),  # type: ignore[attr-defined]
                           version=code_version(sorted(handles), ingress_init), _internal=True, **common).bind(
        handles, ingress_init
    )


def ingress_ws_max_connections(s: Settings) -> int:
    """Sockets the ingress may hold when ``serve-ml-live`` is not deployed: a quarter
    of its request slots, so predictions keep three quarters however many clients
    come (the rest are told to try again, close code 1013)."""
    return max(1, s.max_ongoing_requests // 4)


# The control plane redeploys the graph from a recipe naming this module
# (``serve_ml.scoring.reconcile``); these two are what it calls.
def plan(app_args: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The dedicated equipment a recipe's graph would have now."""
    return dedicated_equipment(AppArgs.model_validate(app_args), Settings(**settings))


def deploy(app_args: dict[str, Any], settings: dict[str, Any], app_name: str) -> None:
    """Redeploy a recipe's graph in place (Serve rolls it without dropping requests)."""
    from ray import serve

    serve.run(build_graph(AppArgs.model_validate(app_args), Settings(**settings)), name=app_name, route_prefix="/")


def http_store_bootstrap(s: Settings) -> str | None:
    """Where HTTP predictions are stored through, or None when they are not."""
    if not s.store_http_predictions:
        return None
    if not s.kafka_bootstrap:
        raise ValueError("SERVE_ML_STORE_HTTP_PREDICTIONS needs a broker: set KAFKA_BOOTSTRAP, or start the "
                         "system with `serve-ml up`, which starts one")
    return s.kafka_bootstrap
