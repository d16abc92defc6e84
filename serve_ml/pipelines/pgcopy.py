"""PostgreSQL's binary COPY format, written column-wise with numpy.

asyncpg's ``copy_records_to_table`` encodes row by row, field by field: at stream
rate that and building the row tuples for it were about half of the scorer's CPU.
Here a table's rows are described column by column and encoded in a few numpy
passes: every run of fixed-width fields between two variable-length ones (and
each variable field's length word) becomes one packed structured array, and the
rows come out of one ``b"".join`` over those slices and the variable pieces.

The format (PostgreSQL docs, "COPY ... Binary Format"): an 11-byte signature, a
flags word and a header-extension length, then per row a 16-bit field count and
per field a 32-bit length (-1 for NULL) followed by the value in the type's binary
send format (big-endian), then a 16-bit -1. Types used here: ``timestamptz`` (int64
microseconds since 2000-01-01 UTC), ``text`` and ``json`` (UTF-8 bytes),
``boolean`` (one byte), ``double precision``, ``integer``, ``bigint``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # timestamptz counts microseconds from here
_PG_EPOCH_S = int(PG_EPOCH.timestamp())

INT4, INT8, FLOAT8, BOOL, TIMESTAMPTZ = ">i4", ">i8", ">f8", "?", ">i8"


@dataclass(frozen=True, slots=True)
class Fixed:
    """A fixed-width column: ``values`` (one per row, or one for all rows) in
    ``dtype``; ``None`` is NULL in every row. Use :func:`nullable` when only some
    rows are NULL."""

    dtype: str
    values: np.ndarray | float | int | bool | None


@dataclass(frozen=True, slots=True)
class Const:
    """The same text (or JSON, or NULL) in every row."""

    value: bytes | None


@dataclass(frozen=True, slots=True)
class Var:
    """Variable-length values, one per row (``None``: NULL)."""

    values: Sequence[bytes | None]

    def take(self, rows: Sequence[int]) -> Var:
        """Only ``rows``, in that order."""
        return Var([self.values[i] for i in rows])


@dataclass(frozen=True, slots=True)
class Parts:
    """A variable-length value (never NULL) written as consecutive pieces: each
    piece is one ``bytes`` for every row or a sequence of one per row. Nothing is
    concatenated per row; the pieces go straight into the payload's one join."""

    pieces: Sequence[bytes | Sequence[bytes]]

    def take(self, rows: Sequence[int]) -> Parts:
        """Only ``rows``, in that order."""
        return Parts([p if isinstance(p, bytes) else [p[i] for i in rows] for p in self.pieces])


Column = Fixed | Const | Var | Parts


def timestamps_us(times: Sequence[dt.datetime]) -> np.ndarray:
    """Aware datetimes as ``timestamptz``'s wire value. A float64 timestamp is
    within a quarter of a microsecond of the true one for this century's dates, so
    rounding recovers the exact microsecond."""
    ts = np.fromiter(map(dt.datetime.timestamp, times), np.float64, len(times))
    return np.rint((ts - _PG_EPOCH_S) * 1e6).astype(np.int64)


def nullable(dtype: str, values: Sequence[float | int | bool | None]) -> Column:
    """A fixed-width column in which some rows may be NULL."""
    if None not in values:  # ``in``: a C loop, not a generator per value
        return Fixed(dtype, np.asarray(values))
    if all(v is None for v in values):
        return Fixed(dtype, None)
    packed = np.asarray([0 if v is None else v for v in values]).astype(dtype).view(f"V{np.dtype(dtype).itemsize}")
    return Var([None if v is None else b for v, b in zip(values, packed.tolist(), strict=True)])


def encode_rows(n: int, columns: Sequence[Column]) -> bytes:
    """``n`` rows of ``columns`` in the binary format, without the header and
    trailer (so that several groups' rows can follow one header)."""
    if n == 0:
        return b""
    segments: list[list[bytes] | Sequence[bytes]] = []
    packed: list[tuple[str, object]] = [(">i2", len(columns))]
    for col in columns:
        if isinstance(col, Fixed):
            if col.values is None:
                packed.append((">i4", -1))
            else:
                packed += [(">i4", np.dtype(col.dtype).itemsize), (col.dtype, col.values)]
        elif isinstance(col, Const):
            if col.value is None:
                packed.append((">i4", -1))
            else:
                packed += [(">i4", len(col.value)), *_constant(col.value)]
        elif isinstance(col, Var):
            values = col.values
            if None in values:
                lengths = np.fromiter((-1 if v is None else len(v) for v in values), np.int32, n)
                values = [b"" if v is None else v for v in values]
            else:
                values = cast("list[bytes]", values)
                lengths = np.fromiter(map(len, values), np.int32, n)
            packed.append((">i4", lengths))
            segments.append(_pack(n, packed))
            segments.append(values)  # type: ignore[arg-type]
            packed = []
        else:
            total: np.ndarray | int = 0
            for piece in col.pieces:
                total = total + (len(piece) if isinstance(piece, bytes) else np.fromiter(map(len, piece), np.int32, n))
            packed.append((">i4", total))
            for piece in col.pieces:
                if isinstance(piece, bytes):  # constant pieces travel in the packed structs
                    packed += _constant(piece)
                    continue
                if packed:
                    segments.append(_pack(n, packed))
                segments.append(piece)
                packed = []
    if packed:
        segments.append(_pack(n, packed))
    if len(segments) == 1:
        return b"".join(segments[0])
    pieces: list[bytes] = [b""] * (n * len(segments))
    for k, seg in enumerate(segments):
        pieces[k::len(segments)] = seg
    return b"".join(pieces)


def _constant(value: bytes) -> list[tuple[str, object]]:
    """A packed field holding ``value`` in every row (none for empty bytes)."""
    return [(f"V{len(value)}", np.frombuffer(value, f"V{len(value)}")[0])] if value else []


def _pack(n: int, fields: list[tuple[str, object]]) -> list[bytes]:
    """One packed struct per row, as a list of bytes."""
    arr = np.empty(n, dtype=np.dtype([(f"f{i}", t) for i, (t, _) in enumerate(fields)]))
    for i, (_, value) in enumerate(fields):
        arr[f"f{i}"] = value
    return arr.view(f"V{arr.dtype.itemsize}").tolist()
