"""Reference rows for the stream's stored columns: what each column must hold, read
off the JSON-ready verdicts, for the encoder's unit test and the stream's
integration test alike."""

from __future__ import annotations

import datetime as dt
import hashlib

import orjson

from serve_ml.bundles.batch import Reading
from serve_ml.core.errors import ServeMLError
from serve_ml.pipelines.encode import Origin
from serve_ml.pipelines.verdicts import Verdict
from tests.samples import mixed_power_rows

T0 = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
# The wire types of the COPY columns (``encode.R_COLS``, ``encode.P_COLS``), for ``tests.pgcopy_reader``.
R_KINDS = ("timestamptz", "text", "int8", "text", "json", "text", "int4", "int8")
P_KINDS = ("timestamptz", "text", "int8", "text", "text", "bool", "float8", "json", "text", "json", "text", "int4",
           "int8", "float8", "float8", "float8")


def key_of(features: dict, reading_id: str | None = None) -> int:
    """``reading_key`` from its definition: 64 bits of BLAKE2b, little-endian, signed."""
    data = b"id:" + reading_id.encode() if reading_id is not None else orjson.dumps(features)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def readings() -> list[Reading]:
    rows = mixed_power_rows(40)
    out = [Reading("pump-03", r) for r in rows]  # power chosen per row; pump-03 has a default class
    out += [Reading("press-02", r, "7.5kW") for r in rows[:10]]  # press-02 has a classifier
    thermal_only = {k: v for k, v in rows[0].items() if k in ("air_temp_k", "process_temp_k")}
    out += [Reading("press-02", thermal_only, "5.5kW") for _ in range(3)]  # mechanical absent
    no_current = {k: v for k, v in rows[3].items() if k != "current_a"}
    out += [Reading("press-02", no_current, "5.5kW") for _ in range(2)]  # mechanical incomplete: reported missing
    out.append(Reading("pump-03", {**rows[1], "torque_nm": float("nan")}, "5.5kW"))  # a bad row
    out.append(Reading("no-such-machine", rows[2]))  # a failed group
    return out


def rows_from_verdicts(origins: list[Origin], results: list) -> tuple[list, list, list]:
    """The reference: each stored column read off the JSON-ready verdict dict."""
    readings, preds, verdicts = [], [], []
    for o, r in zip(origins, results, strict=True):
        if isinstance(r, ServeMLError):
            continue
        clf = r["classifier"]
        probs = clf.get("probabilities")
        key = key_of(dict(o.features), o.reading_id)
        readings.append((o.ts, r["equipment_id"], key, r["power"], orjson.dumps(dict(o.features)).decode(), o.source,
                         o.partition, o.offset))
        rul = r.get("rul") or {}
        preds.append((o.ts, r["equipment_id"], key, r["power"], r["model_version"], r["anomaly"], r["score"],
                      orjson.dumps(r["modalities"]).decode(), clf.get("label"),
                      orjson.dumps(probs).decode() if probs else None, o.source, o.partition, o.offset,
                      rul.get("value"), rul.get("lower"), rul.get("upper")))
        verdicts.append(Verdict(o.ts, r["equipment_id"], r["power"], r["model_version"], r["anomaly"], r["score"],
                                clf.get("label"),
                                [m for m, d in r["modalities"].items() if d.get("anomaly")] if r["anomaly"] else [],
                                rul.get("value")))
    return readings, preds, verdicts
