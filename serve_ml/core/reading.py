"""The reading contract: what one sensor reading may hold, stated once.

A reading arrives as an HTTP body (validated by pydantic in Rust), a stream message
(msgspec in C for the usual batch, :func:`check_features` and :func:`check_name`
for the rest), or columns (numpy). Each path keeps its own fast validator, but
every limit comes from here, and every refusal is worded from here: a problem is
``<where>: <what>`` with ``<what>`` one of the texts below, so the same bad reading
is refused with the same words whichever way it came.
``tests/unit/core/test_reading_contract.py`` holds every path to one table of cases.

The rules:

* ``equipment_id`` (and ``power``, ``model_version``, the stream's ``reading_id``
  when given): a string of 1 to :data:`MAX_NAME_CHARS` characters.
* ``features``: an object of 1 to :data:`MAX_FEATURES` entries, each name 1 to
  :data:`MAX_NAME_CHARS` characters, each value a JSON number (not a boolean, not a
  string, not null) that is finite.
* No other field (the stream adds ``ts`` and ``reading_id``).

Whether the features fit a bundle (unknown, missing, derived) is the scorer's to
say, after the contract; so is a non-finite value on the HTTP bulk paths, where it
makes that one row an error and leaves the others scored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

MAX_NAME_CHARS = 128
MAX_FEATURES = 256
NAME_FIELDS = ("equipment_id", "power", "model_version", "reading_id")

BAD_NAME = f"expected a non-empty string of at most {MAX_NAME_CHARS} characters"
BAD_FEATURES = "expected a non-empty object of name -> number"
TOO_MANY_FEATURES = f"more than {MAX_FEATURES} entries"
BAD_FEATURE_NAME = f"every name must have 1 to {MAX_NAME_CHARS} characters"
NOT_A_NUMBER = "expected a number"
NOT_FINITE = "not a finite number"
_FLOAT = {float}


class ReadingInvalid(ValueError):
    """A reading the contract refuses; ``str(exc)`` is ``<where>: <what>``."""


def problem(where: str, what: str) -> str:
    return f"{where}: {what}"


def unknown_fields(names: Iterable[str]) -> str:
    return problem("unknown fields", ", ".join(sorted(names)[:5]))


def check_name(value: object, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise ReadingInvalid(problem(field, BAD_NAME))
    return value


def check_features(value: object) -> dict[str, float]:
    """The features of one reading as name -> float, or :class:`ReadingInvalid`
    naming the first problem."""
    if type(value) is not dict or not value:
        raise ReadingInvalid(problem("features", BAD_FEATURES))
    if len(value) > MAX_FEATURES:
        raise ReadingInvalid(problem("features", TOO_MANY_FEATURES))
    # The usual reading: every value a float, all finite (a NaN or an infinity makes
    # the sum non-finite), every name of a fitting length. Checked with a few C-level
    # passes instead of a Python loop per feature; anything else takes the loop
    # below, which names the offending feature.
    values = value.values()
    if set(map(type, values)) == _FLOAT and math.isfinite(sum(values)) and \
            0 < min(map(len, value)) and max(map(len, value)) <= MAX_NAME_CHARS:
        return value
    out: dict[str, float] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k or len(k) > MAX_NAME_CHARS:
            raise ReadingInvalid(problem("features", BAD_FEATURE_NAME))
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ReadingInvalid(problem(f"features.{k}", NOT_A_NUMBER))
        f = float(v)
        if not math.isfinite(f):
            raise ReadingInvalid(problem(f"features.{k}", NOT_FINITE))
        out[k] = f
    return out


def translate(loc: Sequence[Any], error_type: str) -> str | None:
    """The contract's wording for a validation error at ``loc`` inside a reading
    (pydantic's location, the reading's own fields first), or None when ``loc`` is
    not a field the contract speaks of. A columnar request's ``columns`` follow the
    rules of ``features``, one value per row."""
    if not loc:
        return None
    head = loc[0]
    if head in NAME_FIELDS and len(loc) == 1:
        return problem(str(head), BAD_NAME)
    if head not in ("features", "columns"):
        return unknown_fields([str(head)]) if error_type == "extra_forbidden" and len(loc) == 1 else None
    if len(loc) == 1:
        return problem(head, TOO_MANY_FEATURES if error_type == "too_long" else BAD_FEATURES)
    if len(loc) >= 3 and loc[2] == "[key]":
        return problem(head, BAD_FEATURE_NAME)
    return problem(f"{head}.{loc[1]}", NOT_FINITE if error_type == "finite_number" else NOT_A_NUMBER)
