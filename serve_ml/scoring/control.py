"""Cluster-wide bundle state: a generation counter and the explicit live-version map.

One named Ray actor holds it. Every replica that serves bundles (equipment
deployments and ingress replicas) polls it from a background thread and reloads
when the generation moves, so a sync reaches every replica of every deployment,
which a single handle call cannot do.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray

from serve_ml.bundles.catalog import Override
from serve_ml.scoring.history import load_state_once
from serve_ml.scoring.reconcile import GraphReconciler
from serve_ml.scoring.service import ScoringService

log = logging.getLogger("serve_ml.control")
CONTROL_NAME = "serve-ml-control"
CONTROL_NAMESPACE = "serve-ml"

LiveMap = dict[tuple[str, str], Override]


def generation_epoch() -> int:
    """Where a control plane's generation starts: microseconds since 1970. Ray
    restarts the actor with a fresh counter, and replicas and responses compare
    generations, so a restarted control plane must never count from below where
    the old one got to (it would take a million bumps a second to)."""
    return time.time_ns() // 1000


@ray.remote(num_cpus=0, max_restarts=-1)
class ControlPlane:
    """Sync generation, explicit live versions and their change history.

    Pins, rollbacks and their history are persisted by the management calls that
    make them (``deployments.history``); the control plane loads them back whenever
    it starts, the first time and after Ray restarts it, so a restart never brings
    back a version an operator rolled away from. Its database is the one given by
    whoever created it, else ``DATABASE_URL`` of its own environment (under
    ``serve deploy`` or a RayService the first replica up may create it)."""

    def __init__(self, database_url: str | None = None) -> None:
        self.generation = generation_epoch()
        self.live_overrides: LiveMap = {}
        self.changes: list[dict[str, Any]] = []
        self.graph = GraphReconciler()
        self.database_url = database_url or _env_database_url()
        self.restored = self._restore()

    def _restore(self) -> bool:
        if self.database_url is None:
            return False
        state = load_state_once(self.database_url)
        if state is None:
            log.warning("control plane: the database is unreachable; starting with no pins or history")
            return False
        overrides, changes = state
        self.live_overrides = {k: Override(**v) for k, v in overrides.items()}
        self.changes = list(changes)
        log.info("control plane: restored %d live-version overrides and %d changes", len(overrides), len(changes))
        return True

    def set_recipe(self, app_args: dict[str, Any], settings: dict[str, Any], deployed: list[str],
                   graph: str, app_name: str) -> None:
        """How the launcher built the graph, so a sync can redeploy it (see reconcile.py)."""
        self.graph.set_recipe(app_args, settings, deployed, graph=graph, app_name=app_name)

    def recipe(self) -> dict[str, Any] | None:
        return self.graph.recipe

    def reconcile(self) -> dict[str, Any]:
        return self.graph.reconcile()

    def graph_status(self) -> dict[str, Any]:
        return self.graph.status()

    def state(self) -> tuple[int, LiveMap]:
        return self.generation, dict(self.live_overrides)

    def restore_status(self) -> dict[str, Any]:
        return {"restored": self.restored, "database": self.database_url is not None,
                "overrides": len(self.live_overrides), "changes": len(self.changes)}

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


def _env_database_url() -> str | None:
    from serve_ml.core.settings import Settings

    return Settings().database_url


def get_control(database_url: str | None = None) -> Any:
    """The control-plane actor, created on first use (idempotent across replicas).
    ``database_url`` is where it restores pins from; it counts only for the call that
    creates the actor."""
    return ControlPlane.options(  # type: ignore[attr-defined]
        name=CONTROL_NAME, namespace=CONTROL_NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote(database_url)


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
