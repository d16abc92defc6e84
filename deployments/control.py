"""Cluster-wide bundle state: a generation counter and the explicit live-version map.

One named Ray actor holds it. Every replica that serves bundles (equipment
deployments and ingress replicas) polls it from a background thread and reloads
when the generation moves, so a sync reaches every replica of every deployment,
which a single handle call cannot do.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray

from bundles.catalog import Override
from deployments.reconcile import GraphReconciler
from deployments.service import ScoringService

log = logging.getLogger("serve_ml.control")
CONTROL_NAME = "serve-ml-control"
CONTROL_NAMESPACE = "serve-ml"

LiveMap = dict[tuple[str, str], Override]


@ray.remote(num_cpus=0, max_restarts=-1)
class ControlPlane:
    """Sync generation, explicit live versions and their change history."""

    def __init__(self) -> None:
        self.generation = 0
        self.live_overrides: LiveMap = {}
        self.changes: list[dict[str, Any]] = []
        self.restored = False
        self.graph = GraphReconciler()

    def set_recipe(self, app_args: dict[str, Any], settings: dict[str, Any], deployed: list[str]) -> None:
        """How the launcher built the graph, so a sync can redeploy it (see reconcile.py)."""
        self.graph.set_recipe(app_args, settings, deployed)

    def recipe(self) -> dict[str, Any] | None:
        return self.graph.recipe

    def reconcile(self) -> dict[str, Any]:
        return self.graph.reconcile()

    def graph_status(self) -> dict[str, Any]:
        return self.graph.status()

    def state(self) -> tuple[int, LiveMap]:
        return self.generation, dict(self.live_overrides)

    def history(self) -> list[dict[str, Any]]:
        return list(self.changes)

    def bump(self, reason: str) -> int:
        self.generation += 1
        return self.generation

    def apply(self, key: tuple[str, str], override: Override | None, entry: dict[str, Any]) -> int:
        if override is None:
            self.live_overrides.pop(key, None)
        else:
            self.live_overrides[key] = override
        self.changes.append(entry)
        return self.bump(entry["action"])

    def restore(self, overrides: dict[tuple[str, str], dict[str, Any]], changes: list[dict[str, Any]]) -> bool:
        """Load persisted state once, before anything changed it in this cluster."""
        if self.restored or self.changes:
            return False
        self.live_overrides = {k: Override(**v) for k, v in overrides.items()}
        self.changes = list(changes)
        self.restored = True
        self.bump("restore")
        return True


def get_control() -> Any:
    """The control-plane actor, created on first use (idempotent across replicas)."""
    return ControlPlane.options(
        name=CONTROL_NAME, namespace=CONTROL_NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()


class GenerationWatcher(threading.Thread):
    """Polls the control plane; reloads the service when the generation moves.

    Reloading (file reads, validation, torch loads) happens on this thread, off the
    replica's event loop; the swap itself is one reference assignment.
    """

    def __init__(self, service: ScoringService, control: Any, interval_s: float) -> None:
        super().__init__(name="serve-ml-watcher", daemon=True)
        self.service = service
        self.control = control
        self.interval_s = interval_s
        self.stopped = threading.Event()

    def run(self) -> None:
        ticks = 0
        while not self.stopped.wait(self.interval_s):
            ticks += 1
            try:
                generation, overrides = ray.get(self.control.state.remote(), timeout=10)
                if generation != self.service.generation:
                    report = self.service.reload(generation, overrides)
                    log.info("reloaded bundles at generation %s: %s", generation,
                             {k: len(v) for k, v in report.items()})
                elif ticks * self.interval_s >= 5.0:
                    ticks = 0
                    self.service.refresh_gauges()
            except Exception:  # keep serving the current catalog; try again next tick
                log.exception("bundle watcher tick failed")
