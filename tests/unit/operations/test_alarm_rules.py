"""Alarm rules' arithmetic: N of M, minimum duration across batches, hysteresis
and which rule applies. Pure functions, no database."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from serve_ml.operations.alarm_rules import (
    DEFAULT_RULE,
    AlarmRule,
    Pending,
    RuleBook,
    StoredRule,
    limit_hold,
    raise_at,
    score_hold,
)
from serve_ml.operations.thresholds import Limits, Placement

S = 1_000_000  # µs


def _walk(rule: AlarmRule, flags: list[int], batch: int, step_s: float = 1.0) -> int | None:
    """Feed ``flags`` in batches of ``batch`` rows; the overall position that raised."""
    pending, done = Pending(), 0
    times = (np.arange(len(flags)) * step_s * S).astype(np.int64)
    for lo in range(0, len(flags), batch):
        f = np.asarray(flags[lo:lo + batch], dtype=bool)
        at, pending = raise_at(rule, f, times[lo:lo + batch], pending)
        if at is not None:
            return lo + at
        done += len(f)
    return None


def test_the_default_rule_raises_on_the_first_flag() -> None:
    assert DEFAULT_RULE.immediate
    assert _walk(DEFAULT_RULE, [0, 0, 1, 0], 4) == 2
    assert _walk(DEFAULT_RULE, [0, 0, 0], 4) is None


@pytest.mark.parametrize("batch", [1, 2, 3, 7, 100])
def test_n_of_m_raises_on_the_nth_flag_within_the_window_whatever_the_batches(batch: int) -> None:
    rule = AlarmRule(raise_count=3, raise_window=5)
    #        0  1  2  3  4  5  6  7  8  9
    flags = [1, 0, 0, 0, 1, 1, 0, 1, 0, 0]  # 0,4,5: 0 is out of 4's window of 5 → raises at 7 (4,5,7)
    assert _walk(rule, flags, batch) == 7
    assert _walk(rule, [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], batch) is None  # never 3 within 5


@pytest.mark.parametrize("batch", [1, 4, 50])
def test_minimum_duration_counts_from_when_the_condition_began_across_batches(batch: int) -> None:
    rule = AlarmRule(raise_count=1, raise_window=1, min_duration_s=10)
    flags = [0] * 3 + [1] * 5 + [0] + [1] * 20  # a 5 s run that breaks off, then a long one from row 9
    assert _walk(rule, flags, batch) == 19  # 9 + 10 s at one reading a second
    assert _walk(rule, [1] * 10, batch) is None  # 9 s held: not yet


def test_pending_state_is_empty_once_nothing_is_flagged() -> None:
    rule = AlarmRule(raise_count=2, raise_window=3)
    at, p = raise_at(rule, np.array([1, 0], dtype=bool), np.array([0, S]), Pending())
    assert at is None and p.recent == 0b10 and p.since_us is None
    at, p = raise_at(rule, np.array([0, 0], dtype=bool), np.array([2 * S, 3 * S]), p)
    assert at is None and p.empty


def test_score_hysteresis_holds_rows_between_the_clear_and_the_raise_level() -> None:
    anomaly = np.array([True, False, False, False])
    score = np.array([1.5, 0.95, 0.85, 0.5])
    assert score_hold(anomaly, score, DEFAULT_RULE) is None
    assert score_hold(anomaly, score, AlarmRule(clear_margin_pct=10)).tolist() == [False, True, False, False]


def test_limit_hysteresis_uses_the_warning_limit_on_each_side() -> None:
    lim = Limits(warning_min=10, warning_max=100, critical_max=120)
    values = np.array([130.0, 99.0, 89.0, 10.5, 11.5])
    flagged = values > 100
    hold = limit_hold(lim.raise_bounds(), values, flagged, AlarmRule(clear_margin_pct=10))
    assert hold.tolist() == [False, True, False, True, False]  # clear below 90 and above 11


def test_rules_validate_and_say_what_is_wrong() -> None:
    with pytest.raises(ValidationError, match="raise_count .3. must not exceed raise_window .2."):
        AlarmRule(raise_count=3, raise_window=2)
    with pytest.raises(ValidationError, match="Extra inputs"):
        AlarmRule(raise_after=3)  # type: ignore[call-arg]


def test_the_most_specific_scope_wins_and_the_type_beats_the_wildcard() -> None:
    place = {"p1": Placement("press", ("site-a", "hall-1"))}
    book = RuleBook([
        StoredRule("location", "site-a", "*", AlarmRule(clear_after=7), 1),
        StoredRule("location", "site-a/hall-1", "threshold", AlarmRule(raise_count=2, raise_window=3), 1),
        StoredRule("type", "press", "*", AlarmRule(min_duration_s=5), 1),
        StoredRule("type", "press", "anomaly", AlarmRule(raise_count=4, raise_window=4), 1),
    ])
    assert book.applied("p1", "anomaly", place).rule.raise_count == 4
    assert book.applied("p1", "threshold", place).rule.min_duration_s == 5  # type * beats location
    assert book.applied("p1", "rul", place).scope == "type"
    other = book.applied("p2", "rul", {"p2": Placement(None, ("site-a", "hall-9"))})
    assert other.rule.clear_after == 7 and other.target == "site-a"
    assert book.applied("p3", "rul", {}).rule == DEFAULT_RULE
