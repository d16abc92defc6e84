"""A reader for PostgreSQL's binary COPY format, written from the documentation
independently of ``pipelines.pgcopy``: the unit tests decode what the encoder
wrote and compare values (the integration tests let PostgreSQL itself judge)."""

from __future__ import annotations

import datetime as dt
import struct

PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


def _value(kind: str, raw: bytes) -> object:
    if kind == "timestamptz":
        return PG_EPOCH + dt.timedelta(microseconds=struct.unpack(">q", raw)[0])
    if kind in ("text", "json"):
        return raw.decode()
    if kind == "bool":
        assert raw in (b"\x00", b"\x01"), raw
        return raw == b"\x01"
    if kind == "float8":
        return struct.unpack(">d", raw)[0]
    if kind == "int4":
        return struct.unpack(">i", raw)[0]
    if kind == "int8":
        return struct.unpack(">q", raw)[0]
    raise ValueError(kind)


def read_rows(payload: bytes, kinds: tuple[str, ...], *, framed: bool = True) -> list[tuple[object, ...]]:
    """Rows of a COPY payload (``framed``: with header and trailer, else rows only)."""
    data, pos, rows = bytes(payload), 0, []
    if framed:
        assert data[:11] == SIGNATURE
        flags, ext = struct.unpack(">ii", data[11:19])
        assert flags == 0 and ext == 0
        pos = 19
    while pos < len(data):
        (count,) = struct.unpack(">h", data[pos:pos + 2])
        pos += 2
        if count == -1:
            assert framed and pos == len(data), "trailer before the end"
            return rows
        assert count == len(kinds), f"row has {count} fields, expected {len(kinds)}"
        row = []
        for kind in kinds:
            (size,) = struct.unpack(">i", data[pos:pos + 4])
            pos += 4
            if size == -1:
                row.append(None)
                continue
            row.append(_value(kind, data[pos:pos + size]))
            pos += size
        rows.append(tuple(row))
    assert not framed, "no trailer"
    return rows
