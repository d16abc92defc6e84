"""The graph reconciler: a redeploy that fails is tried again, and a last failure
is reported with its error while the old graph stays."""

from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Iterator

import pytest

from serve_ml.scoring import reconcile
from serve_ml.scoring.reconcile import GraphReconciler

MODULE = "serve_ml._test_graph"


@pytest.fixture
def graph(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    """A graph module whose deploy fails ``fail`` times before it succeeds."""
    state = types.SimpleNamespace(wanted=["a"], fail=0, calls=0)

    def deploy(app_args: dict, settings: dict, app_name: str) -> None:
        state.calls += 1
        if state.calls <= state.fail:
            raise RuntimeError(f"controller busy ({state.calls})")

    module = types.ModuleType(MODULE)
    module.plan = lambda app_args, settings: list(state.wanted)  # type: ignore[attr-defined]
    module.deploy = deploy  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, MODULE, module)
    monkeypatch.setattr(reconcile, "REDEPLOY_BACKOFF_S", 0.0)
    yield state


def settled(r: GraphReconciler) -> dict:
    deadline = time.monotonic() + 10
    while r.status()["redeploying"]:
        assert time.monotonic() < deadline, "the redeploy never finished"
        time.sleep(0.01)
    return r.status()


def test_a_transient_failure_is_retried_and_the_new_set_recorded(graph: types.SimpleNamespace) -> None:
    r = GraphReconciler()
    r.set_recipe({}, {}, [], graph=MODULE, app_name="app")
    graph.fail = reconcile.REDEPLOY_ATTEMPTS - 1
    assert r.reconcile()["adding"] == ["a"]
    status = settled(r)
    assert status["last"]["ok"] and status["last"]["attempts"] == reconcile.REDEPLOY_ATTEMPTS
    assert status["dedicated"] == ["a"]


def test_a_lasting_failure_keeps_the_old_set_and_says_why(graph: types.SimpleNamespace) -> None:
    r = GraphReconciler()
    r.set_recipe({}, {}, [], graph=MODULE, app_name="app")
    graph.fail = 99
    r.reconcile()
    status = settled(r)
    assert not status["last"]["ok"] and "controller busy (3)" in status["last"]["error"]
    assert status["dedicated"] == [] and graph.calls == reconcile.REDEPLOY_ATTEMPTS
    # nothing changed on disk: the next sync tries again
    graph.fail = 0
    assert r.reconcile()["adding"] == ["a"]
    assert settled(r)["dedicated"] == ["a"]


def test_a_graph_outside_the_package_is_refused() -> None:
    with pytest.raises(ValueError, match="not part of serve_ml"):
        GraphReconciler().set_recipe({}, {}, [], graph="os", app_name="app")


def test_a_change_made_while_a_redeploy_runs_is_deployed_after_it(graph: types.SimpleNamespace) -> None:
    """Add a bundle (redeploy starts), remove it before that redeploy ends: the graph
    must end without it, not with the set the first redeploy computed."""
    release, started = threading.Event(), threading.Event()
    deployed_sets: list[list[str]] = []

    def slow_deploy(app_args: dict, settings: dict, app_name: str) -> None:
        deployed_sets.append(list(graph.wanted))
        started.set()
        release.wait(10)

    sys.modules[MODULE].deploy = slow_deploy  # type: ignore[attr-defined]
    r = GraphReconciler()
    r.set_recipe({}, {}, ["a"], graph=MODULE, app_name="app")
    graph.wanted = ["a", "b"]
    assert r.reconcile()["adding"] == ["b"]
    assert started.wait(10)
    graph.wanted = ["a"]
    assert r.reconcile()["removing"] == ["b"]
    release.set()
    assert settled(r)["dedicated"] == ["a"]
    assert deployed_sets == [["a", "b"], ["a"]]


def test_a_change_undone_while_a_redeploy_runs_costs_no_second_redeploy(graph: types.SimpleNamespace) -> None:
    release = threading.Event()
    sys.modules[MODULE].deploy = lambda *a: release.wait(10)  # type: ignore[attr-defined]
    r = GraphReconciler()
    r.set_recipe({}, {}, [], graph=MODULE, app_name="app")
    graph.wanted = ["a"]
    r.reconcile()
    graph.wanted = []
    assert r.reconcile()["removing"] == ["a"]  # against the running redeploy's target
    graph.wanted = ["a"]
    assert r.reconcile()["adding"] == []  # back to that target: nothing more to do
    release.set()
    assert settled(r)["dedicated"] == ["a"]
