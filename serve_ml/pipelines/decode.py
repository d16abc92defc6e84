"""Stream message decoding: bytes in, a reading or a dead-letter reason out.

Everything a message can get wrong is caught here or by the scorer; nothing raises
out of the stream loop. Reasons are short, name the offending field, and travel as
a Kafka header on the dead-letter record beside the original bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import NamedTuple

import msgspec
import orjson

from serve_ml.bundles.batch import Reading
from serve_ml.core.reading import ReadingInvalid, check_features, check_name, unknown_fields

_FIELDS = frozenset({"equipment_id", "ts", "power", "model_version", "features", "reading_id"})


class StreamReading(NamedTuple):
    reading: Reading
    ts: dt.datetime
    reading_id: str | None = None
    """The producer's id for this reading, if it gives one (see ``pipelines.encode.reading_key``)."""
    features_json: bytes | None = None
    """The message's ``features`` object as the producer wrote it: stored as is and
    hashed into the reading's key (see :func:`features_as_sent`)."""


class Rejected(ValueError):
    """A message that cannot be scored; ``str(exc)`` is the dead-letter reason."""


def _name(value: object, field: str) -> str:
    try:
        return check_name(value, field)
    except ReadingInvalid as exc:
        raise Rejected(str(exc)) from None


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
    try:
        return check_features(value)
    except ReadingInvalid as exc:
        raise Rejected(str(exc)) from None


class _FeaturesOnly(msgspec.Struct):
    features: msgspec.Raw


_FEATURES_ONLY = msgspec.json.Decoder(_FeaturesOnly)
_AS_FLOATS = msgspec.json.Decoder(dict[str, float])


def features_as_sent(raw: bytes, features: dict[str, float]) -> bytes:
    """The ``features`` object's bytes in ``raw``, exactly as sent, when they hold
    ``features`` (else ``features`` written by orjson). Storing the producer's bytes
    spares writing every float again (1.8 µs a reading, the stream scorer's largest
    cost); a redelivered message has the same bytes, so the same key."""
    try:
        sent = bytes(_FEATURES_ONLY.decode(raw).features)
        if _AS_FLOATS.decode(sent) == features:
            return sent
    except (msgspec.DecodeError, ValueError, RecursionError):
        pass
    return orjson.dumps(features)


def _loads(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = f"not valid JSON: {str(exc)[:120]}"
    # A number orjson refuses (NaN, Infinity, 1e400) is parsed again by the
    # standard library, so the contract can name the non-finite feature as the HTTP
    # API does; a document that needs more than that stays refused as not JSON
    # (the standard library also takes lone surrogates, which nothing downstream could
    # encode: orjson refusing to write the result back catches those).
    try:
        doc = json.loads(raw)
        orjson.dumps(doc)
    except (ValueError, TypeError, RecursionError, orjson.JSONEncodeError):
        raise Rejected(reason) from None
    return doc


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
    doc = _loads(raw)
    if type(doc) is not dict:
        raise Rejected("expected a JSON object")
    if not doc.keys() <= _FIELDS:
        raise Rejected(unknown_fields(doc.keys() - _FIELDS))
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
    features = parse_features(doc.get("features"))
    return StreamReading(
        Reading(eq, features,
                None if power is None else _name(power, "power"),
                None if version is None else _name(version, "model_version")),
        ts,
        None if reading_id is None else _name(reading_id, "reading_id"),
        features_as_sent(raw, features),
    )
