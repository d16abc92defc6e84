"""The column-wise binary COPY encoder writes what a reader written from the format's
documentation reads back: every column kind, NULLs in some rows or all, constants,
empty and multi-byte text, extreme numbers and timestamps to the microsecond."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from serve_ml.pipelines.pgcopy import (
    BOOL,
    FLOAT8,
    HEADER,
    INT4,
    INT8,
    TIMESTAMPTZ,
    TRAILER,
    Const,
    Fixed,
    Parts,
    Var,
    encode_rows,
    nullable,
    timestamps_us,
)
from tests.pgcopy_reader import read_rows

UTC = dt.UTC
times = st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(UTC))
text = st.text(max_size=20).map(str.encode)

def maybe(s: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), s)


# (kind for the reader, strategy of one value, column builder from the n values)
KINDS = {
    "timestamptz": (times, lambda vs: Fixed(TIMESTAMPTZ, timestamps_us(vs)), lambda v: v),
    "bool": (st.booleans(), lambda vs: Fixed(BOOL, np.array(vs)), lambda v: v),
    "float8": (st.floats(allow_nan=False), lambda vs: Fixed(FLOAT8, np.array(vs, dtype=np.float64)), lambda v: v),
    "int4": (maybe(st.integers(-(2**31), 2**31 - 1)), lambda vs: nullable(INT4, vs), lambda v: v),
    "int8": (maybe(st.integers(-(2**63), 2**63 - 1)), lambda vs: nullable(INT8, vs), lambda v: v),
    "text": (maybe(text), lambda vs: Var(vs), lambda v: None if v is None else v.decode()),
}


@st.composite
def tables(draw: st.DrawFn) -> tuple[int, list, list[str], list[list]]:
    n = draw(st.integers(1, 12))
    columns, kinds, expected = [], [], []
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.booleans()) and draw(st.booleans()):  # a constant column
            value = draw(maybe(text))
            columns.append(Const(value))
            kinds.append("text")
            expected.append([None if value is None else value.decode()] * n)
            continue
        if draw(st.booleans()) and draw(st.booleans()):  # a value written as pieces
            pieces = draw(st.lists(st.one_of(text, st.lists(text, min_size=n, max_size=n)), min_size=1, max_size=4))
            columns.append(Parts(pieces))
            kinds.append("text")
            expected.append([b"".join(p if isinstance(p, bytes) else p[i] for p in pieces).decode()
                             for i in range(n)])
            continue
        kind = draw(st.sampled_from(sorted(KINDS)))
        strategy, build, want = KINDS[kind]
        values = draw(st.lists(strategy, min_size=n, max_size=n))
        columns.append(build(values))
        kinds.append(kind)
        expected.append([want(v) for v in values])
    return n, columns, kinds, expected


@given(tables())
def test_rows_read_back_as_written(table) -> None:
    n, columns, kinds, expected = table
    rows = read_rows(HEADER + encode_rows(n, columns) + TRAILER, tuple(kinds))
    assert rows == [tuple(col[i] for col in expected) for i in range(n)]


def test_chunks_of_rows_share_one_header() -> None:
    a = encode_rows(2, [Const(b"a"), Fixed(INT8, np.array([1, 2]))])
    b = encode_rows(1, [Const(b"b"), Fixed(INT8, None)])
    assert read_rows(HEADER + a + b + TRAILER, ("text", "int8")) == [("a", 1), ("a", 2), ("b", None)]
    assert encode_rows(0, [Const(b"a")]) == b""


def test_nullable_chooses_the_cheap_form() -> None:
    assert nullable(INT4, [None, None]) == Fixed(INT4, None)
    assert isinstance(nullable(INT4, [1, 2]), Fixed)
    assert isinstance(nullable(INT4, [1, None]), Var)


def test_timestamps_keep_every_microsecond() -> None:
    base = dt.datetime(2026, 11, 24, 23, 59, 59, tzinfo=UTC)
    ts = [base + dt.timedelta(microseconds=k) for k in range(0, 2_000_000, 7919)]
    got = read_rows(HEADER + encode_rows(len(ts), [Fixed(TIMESTAMPTZ, timestamps_us(ts))]) + TRAILER,
                    ("timestamptz",))
    assert [r[0] for r in got] == ts
    eastern = dt.timezone(dt.timedelta(hours=-5))
    assert read_rows(HEADER + encode_rows(1, [Fixed(TIMESTAMPTZ, timestamps_us([base.astimezone(eastern)]))])
                     + TRAILER, ("timestamptz",)) == [(base,)]


def test_special_floats_survive() -> None:
    values = [math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]
    got = read_rows(HEADER + encode_rows(5, [Fixed(FLOAT8, np.array(values))]) + TRAILER, ("float8",))
    assert [r[0] for r in got] == values
    assert math.copysign(1, got[2][0]) == -1


def test_take_keeps_the_rows_asked_for() -> None:
    parts = Parts([b"<", [b"a", b"b", b"c"], b">"]).take([2, 0])
    var = Var([b"x", None, b"z"]).take([1, 2])
    got = read_rows(HEADER + encode_rows(2, [parts, var]) + TRAILER, ("text", "text"))
    assert got == [("<c>", None), ("<a>", "z")]
