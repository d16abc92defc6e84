"""The per-equipment model deployment: scores readings for its equipment ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import serve

from serve_ml.bundles.batch import Reading, Result
from serve_ml.core.settings import Settings
from serve_ml.core.tracing import configure_logging, configure_tracing, span_from
from serve_ml.deployments.wire import decode_readings
from serve_ml.scoring.control import GenerationWatcher, get_control
from serve_ml.scoring.metrics import Metrics
from serve_ml.scoring.service import ScoringService


@serve.deployment(logging_config={"enable_access_log": False})
class EquipmentModel:
    """Holds every bundle of its equipment ids; autoscaled per equipment.

    ``score`` is a plain ``def``: Serve runs it off the event loop, so CPU-bound
    scoring never stalls the replica (see the throughput-optimised-mode notes).
    """

    def __init__(self, equipment_ids: list[str], root: str, enable_xgb: bool, poll_interval_s: float) -> None:
        settings = Settings()  # this process's environment: tracing and log format
        configure_tracing("serve-ml-equipment", settings.otlp_endpoint)
        configure_logging(settings.log_format)
        control = get_control()
        generation, overrides = ray.get(control.state.remote())
        self.service = ScoringService(Path(root), enable_xgb=enable_xgb, equipment_ids=set(equipment_ids),
                                      live_overrides=overrides, metrics=Metrics())
        self.service.generation = generation
        self.watcher = GenerationWatcher(self.service, control, poll_interval_s)
        self.watcher.start()

    def score(self, readings: list[Reading]) -> list[Result]:
        return self.service.score(readings)

    def score_wire(self, payload: bytes, trace: dict[str, str] | None = None) -> tuple[int, bytes]:
        """Bulk path: orjson bytes in, ``(errors, JSON array of result items)`` out.
        ``trace``: the caller's span (W3C headers), continued here."""
        with span_from(trace, "equipment.score_wire"):
            return self.service.score_bulk(decode_readings(payload))

    def score_columns(self, equipment_id: str, power: str | None, version: str | None,
                      columns: dict[str, np.ndarray], n: int, trace: dict[str, str] | None = None) -> tuple[int, bytes]:
        """Columnar bulk path: numpy columns in (Ray moves them without per-row work),
        ``(status, JSON body)`` out."""
        with span_from(trace, "equipment.score_columns", **{"serve_ml.rows": n}):
            return self.service.score_columns(equipment_id, power, version, columns, n)

    def describe(self) -> list[dict[str, Any]]:
        return self.service.describe()

    def generation(self) -> int:
        return self.service.generation

    def __del__(self) -> None:
        self.watcher.stopped.set()
