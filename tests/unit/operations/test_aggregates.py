"""Compact ranges of the aggregates API."""

from __future__ import annotations

import datetime as dt

import pytest

from serve_ml.core.errors import InvalidQuery
from serve_ml.operations.aggregates import compact_range

U = dt.UTC


@pytest.mark.parametrize("text, start, end", [
    ("2026", dt.datetime(2026, 1, 1, tzinfo=U), dt.datetime(2027, 1, 1, tzinfo=U)),
    ("202612", dt.datetime(2026, 12, 1, tzinfo=U), dt.datetime(2027, 1, 1, tzinfo=U)),
    ("202602", dt.datetime(2026, 2, 1, tzinfo=U), dt.datetime(2026, 3, 1, tzinfo=U)),
    ("20261205", dt.datetime(2026, 12, 5, tzinfo=U), dt.datetime(2026, 12, 6, tzinfo=U)),
    ("20281231", dt.datetime(2028, 12, 31, tzinfo=U), dt.datetime(2029, 1, 1, tzinfo=U)),
])
def test_compact_ranges(text: str, start: dt.datetime, end: dt.datetime) -> None:
    assert compact_range(text) == (start, end)


@pytest.mark.parametrize("text", ["26", "2026-12", "202613", "20260230", "abcd", "2026120", "0000"])
def test_bad_compact_ranges_say_which_forms_work(text: str) -> None:
    with pytest.raises(InvalidQuery, match=text):
        compact_range(text)
