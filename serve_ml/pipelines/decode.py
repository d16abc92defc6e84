"""Stream message decoding: bytes in, a reading or a dead-letter reason out.

Everything a message can get wrong is caught here or by the scorer; nothing raises
out of the stream loop. Reasons are short, name the offending field, and travel as
a Kafka header on the dead-letter record beside the original bytes.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import NamedTuple

import orjson

from serve_ml.bundles.batch import Reading

MAX_FEATURES = 256
MAX_NAME = 128
_FIELDS = frozenset({"equipment_id", "ts", "power", "model_version", "features", "reading_id"})
_FLOAT = {float}


class StreamReading(NamedTuple):
    reading: Reading
    ts: dt.datetime
    reading_id: str | None = None
    """The producer's id for this reading, if it gives one (see ``pipelines.encode.reading_key``)."""


class Rejected(ValueError):
    """A message that cannot be scored; ``str(exc)`` is the dead-letter reason."""


def _name(value: object, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise Rejected(f"{field}: expected a non-empty string of at most {MAX_NAME} characters")
    return value


_EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC) + dt.timedelta(days=1)
_LATEST = dt.datetime.max.replace(tzinfo=dt.UTC) - dt.timedelta(days=1)


def window(now: dt.datetime, max_age_s: float, max_future_s: float) -> tuple[dt.datetime, dt.datetime]:
    """The accepted reading times, ``[now - max_age_s, now + max_future_s]``, clamped a
    day inside datetime's range so neither bound, nor the day after it, overflows."""
    def shifted(seconds: float, limit: dt.datetime) -> dt.datetime:
        try:
            moved = now + dt.timedelta(seconds=seconds)
        except OverflowError:
            return limit
        return min(moved, limit) if seconds > 0 else max(moved, limit)

    return shifted(-max_age_s, _EARLIEST), shifted(max_future_s, _LATEST)


def in_window(ts: dt.datetime, now: dt.datetime, max_age_s: float, max_future_s: float) -> dt.datetime:
    """``ts`` if it lies in the accepted window; every timestamp a reading is stored
    under passes here, whatever it came from (the payload, the record, the transport)."""
    lo, hi = window(now, max_age_s, max_future_s)
    if not lo <= ts <= hi:
        raise Rejected(f"ts: {ts.isoformat()} is outside the accepted window")
    return ts


def record_time(timestamp_ms: int | None) -> dt.datetime | None:
    """A Kafka record's own timestamp as a datetime; None when it has none (-1, 0) or
    one that is no time at all (negative, or past year 9999)."""
    if not timestamp_ms or timestamp_ms < 0:
        return None
    try:
        return dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_ts(value: object, *, now: dt.datetime, max_age_s: float, max_future_s: float) -> dt.datetime:
    if isinstance(value, bool) or value is None:
        raise Rejected("ts: expected an ISO-8601 string or epoch seconds")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise Rejected("ts: not a finite number")
        try:
            ts = dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise Rejected("ts: epoch seconds out of range") from None
    elif isinstance(value, str) and len(value) <= 64:
        try:
            ts = dt.datetime.fromisoformat(value)
        except ValueError:
            raise Rejected("ts: not an ISO-8601 timestamp") from None
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=dt.UTC)
    else:
        raise Rejected("ts: expected an ISO-8601 string or epoch seconds")
    return in_window(ts, now, max_age_s, max_future_s)


def parse_features(value: object) -> dict[str, float]:
    if type(value) is not dict or not value:
        raise Rejected("features: expected a non-empty object of name -> number")
    if len(value) > MAX_FEATURES:
        raise Rejected(f"features: more than {MAX_FEATURES} entries")
    # The usual message: every value a float, all finite (a NaN or an infinity makes
    # the sum non-finite), every name short. Checked with a few C-level passes
    # instead of a Python loop per feature; anything else takes the loop below,
    # which names the offending feature.
    values = value.values()
    if set(map(type, values)) == _FLOAT and math.isfinite(sum(values)) and max(map(len, value)) <= MAX_NAME:
        return value
    out: dict[str, float] = {}
    for k, v in value.items():
        if len(k) > MAX_NAME:
            raise Rejected(f"features: name longer than {MAX_NAME} characters")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise Rejected(f"features.{k}: expected a number")
        f = float(v)
        if not math.isfinite(f):
            raise Rejected(f"features.{k}: not a finite number")
        out[k] = f
    return out


def decode(
    raw: bytes | None,
    *,
    equipment_id: str | None = None,
    max_bytes: int,
    now: dt.datetime,
    max_age_s: float,
    max_future_s: float,
    default_ts: dt.datetime | None = None,
) -> StreamReading:
    """Decode one message. ``equipment_id`` is given when the transport carries it
    (the MQTT topic level); otherwise it comes from the payload. A message without
    ``ts`` takes ``default_ts`` (the Kafka record's own timestamp, stable across
    redeliveries, so replays still deduplicate), held to the same window."""
    if raw is None:
        raise Rejected("empty message")
    if len(raw) > max_bytes:
        raise Rejected(f"message is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Rejected(f"not valid JSON: {str(exc)[:120]}") from None
    if type(doc) is not dict:
        raise Rejected("expected a JSON object")
    if not doc.keys() <= _FIELDS:
        raise Rejected(f"unknown fields: {', '.join(sorted(doc.keys() - _FIELDS)[:5])}")
    eq = _name(equipment_id if equipment_id is not None else doc.get("equipment_id"), "equipment_id")
    power = doc.get("power")
    version = doc.get("model_version")
    ts_value = doc.get("ts")
    if ts_value is None:
        if default_ts is None:
            raise Rejected("ts: missing, and the record carries no usable timestamp")
        ts = in_window(default_ts, now, max_age_s, max_future_s)
    else:
        ts = parse_ts(ts_value, now=now, max_age_s=max_age_s, max_future_s=max_future_s)
    reading_id = doc.get("reading_id")
    return StreamReading(
        Reading(eq, parse_features(doc.get("features")),
                None if power is None else _name(power, "power"),
                None if version is None else _name(version, "model_version")),
        ts,
        None if reading_id is None else _name(reading_id, "reading_id"),
    )
