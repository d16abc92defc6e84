"""Threshold levels and which limits apply: pure functions, no database."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from serve_ml.operations.thresholds import Limits, Placement, Rule, ThresholdBook, breaches, levels, location_path


def test_levels_warning_and_critical_on_both_sides() -> None:
    lim = Limits(critical_min=1, warning_min=2, warning_max=8, critical_max=9)
    got = levels(lim, np.array([0.5, 1.5, 2.0, 5, 8.0, 8.5, 9.5]))
    assert got.tolist() == [2, 1, 0, 0, 0, 1, 2]
    assert Limits(critical_max=10).level(11) == 2 and Limits(critical_max=10).level(10) == 0


@pytest.mark.parametrize("kw, words", [
    ({}, "at least one of"),
    ({"warning_max": 9, "critical_max": 8}, "warning_max (9.0) must not be above critical_max (8.0)"),
    ({"warning_min": 5, "critical_min": 6}, "critical_min (6.0) must not be above warning_min (5.0)"),
    ({"warning_min": 5, "warning_max": 4}, "warning_min (5.0) must not be above warning_max (4.0)"),
    ({"warning_max": float("nan")}, "finite number"),
])
def test_disordered_or_empty_limits_are_refused_with_the_reason(kw: dict, words: str) -> None:
    with pytest.raises(ValidationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Limits(**kw)


def test_the_most_specific_scope_wins_sensor_by_sensor() -> None:
    rules = [Rule("location", "site-a", "temp", Limits(warning_max=50), 1),
             Rule("location", "site-a/hall-1", "temp", Limits(warning_max=45), 1),
             Rule("location", "site-a", "current", Limits(warning_max=30), 1),
             Rule("type", "press", "current", Limits(warning_max=20), 2),
             Rule("equipment", "p1", "current", Limits(warning_max=10), 3)]
    book = ThresholdBook(rules, {"p1": Placement("press", ("site-a", "hall-1")),
                                 "p2": Placement("press", ("site-a", "hall-2")),
                                 "m1": Placement("mill", ("site-a",))})
    assert {s: (a.scope, a.limits.warning_max) for s, a in book.applied("p1").items()} == {
        "current": ("equipment", 10), "temp": ("location", 45)}
    assert {s: (a.scope, a.limits.warning_max) for s, a in book.applied("p2").items()} == {
        "current": ("type", 20), "temp": ("location", 50)}
    assert book.applied("m1")["current"].target == "site-a"
    assert book.applied("unregistered") == {}
    judged = book.judge("p1", {"current": np.array([5.0, 11.0]), "temp": np.array([44.0, 46.0]),
                               "other": np.array([1e9, 1e9])})
    assert {k: v.tolist() for k, v in judged.items()} == {"current": [0, 1], "temp": [0, 1]}
    assert [b["sensor"] for b in breaches(book, "p1", {"current": 11.0, "temp": 40.0})] == ["current"]


def test_location_paths_refuse_empty_and_padded_parts() -> None:
    assert location_path("site-a/hall-1") == ("site-a", "hall-1")
    assert location_path(["site-a"]) == ("site-a",)
    assert location_path("") == ()
    for bad in ("a//b", "a/ b", "/a"):
        with pytest.raises(ValueError, match="empty or space-padded"):
            location_path(bad)
