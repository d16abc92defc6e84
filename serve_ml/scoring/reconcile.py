"""Keep the Serve graph's dedicated equipment deployments in step with the bundle root.

A sync changes what is servable at once (the catalog); which equipment has its own
autoscaled deployment is a property of the deployed graph. When the set changes, the
graph is redeployed from the recipe the launcher registered: Serve starts the new
deployments, rolls the ingress (requests keep being served, measured with zero
failures), and drains a removed equipment's replicas before it deletes them; other
equipment's deployments are unchanged and keep their replicas.

An app deployed from a config file (``serve deploy``/``serve run``) has no recipe:
its graph is the config's to change, and sync says so.

The recipe names the module that builds the graph (``graph``), as Serve's own
``import_path`` does: this layer sits below the deployments it redeploys and never
imports them by name.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from typing import Any

log = logging.getLogger("serve_ml.reconcile")

REDEPLOY_ATTEMPTS = 3
"""A redeploy that fails (a replica that could not start in time, a controller that
was busy) is tried again: until it succeeds the graph disagrees with the catalog."""
REDEPLOY_BACKOFF_S = 2.0


class GraphReconciler:
    """Runs redeploys on a background thread, one at a time, coalescing requests."""

    def __init__(self) -> None:
        self.recipe: dict[str, Any] | None = None
        self.deployed: list[str] = []
        self.target: list[str] = []  # what the running redeploy deploys
        self.running = False
        self.dirty = False
        self.last: dict[str, Any] = {}
        self._lock = threading.Lock()

    def set_recipe(self, app_args: dict[str, Any], settings: dict[str, Any], deployed: list[str],
                   *, graph: str, app_name: str) -> None:
        """``graph`` is a module of this package with ``plan(app_args, settings)``
        (the dedicated equipment) and ``deploy(app_args, settings, app_name)``."""
        if not graph.startswith("serve_ml."):
            raise ValueError(f"graph module {graph!r} is not part of serve_ml")
        with self._lock:
            self.recipe = {"app_args": app_args, "settings": settings, "graph": graph, "app_name": app_name}
            self.deployed = list(deployed)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"managed": self.recipe is not None, "dedicated": list(self.deployed),
                    "redeploying": self.running, "last": dict(self.last)}

    def reconcile(self) -> dict[str, Any]:
        """Start a redeploy if the dedicated set should change; say what happens."""
        if self.recipe is None:
            return {"managed": False, "note": "graph deployed from a config file: run `serve deploy` to add or "
                    "remove dedicated equipment deployments"}
        wanted = self._wanted()
        with self._lock:
            # While a redeploy runs, compare with what it is deploying, not with what
            # ran before it: a bundle removed during the redeploy that added it must
            # still be taken away afterwards.
            current = self.target if self.running else self.deployed
            adding = sorted(set(wanted) - set(current))
            removing = sorted(set(current) - set(wanted))
            if not adding and not removing:
                return {"managed": True, "adding": [], "removing": [], "redeploying": self.running}
            if self.running:
                self.dirty = True  # the running redeploy picks this up when it finishes
            else:
                self.running, self.target = True, list(wanted)
                threading.Thread(target=self._loop, name="serve-ml-reconcile", daemon=True).start()
        log.info("redeploying the graph: adding %s, draining and removing %s", adding, removing)
        return {"managed": True, "adding": adding, "removing": removing, "redeploying": True}

    def _graph(self) -> Any:
        assert self.recipe is not None
        return importlib.import_module(self.recipe["graph"])

    def _wanted(self) -> list[str]:
        assert self.recipe is not None
        return list(self._graph().plan(self.recipe["app_args"], self.recipe["settings"]))

    def _loop(self) -> None:
        first = True
        while True:
            wanted = self._wanted()
            with self._lock:
                if not first and self.last.get("ok") and set(wanted) == set(self.deployed):
                    self.running = False  # changed and changed back while the last redeploy ran
                    return
                self.target, first = list(wanted), False
            t0 = time.monotonic()
            outcome: dict[str, Any] = {}
            for attempt in range(1, REDEPLOY_ATTEMPTS + 1):
                try:
                    self._deploy()
                    outcome = {"ok": True, "dedicated": wanted, "took_s": round(time.monotonic() - t0, 1),
                               "attempts": attempt}
                    break
                except Exception as exc:  # keep the old graph; try again, then report it
                    log.exception("graph redeploy failed (attempt %d of %d)", attempt, REDEPLOY_ATTEMPTS)
                    outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500], "attempts": attempt}
                    if attempt < REDEPLOY_ATTEMPTS:
                        time.sleep(REDEPLOY_BACKOFF_S * attempt)
            with self._lock:
                if outcome["ok"]:
                    self.deployed = wanted
                self.last = {**outcome, "at": time.time()}
                if not self.dirty:
                    self.running = False
                    return
                self.dirty = False

    def _deploy(self) -> None:
        assert self.recipe is not None
        r = self.recipe
        self._graph().deploy(r["app_args"], r["settings"], r["app_name"])
