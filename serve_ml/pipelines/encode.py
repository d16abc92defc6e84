"""Readings -> scored rows for COPY into ``serve_ml_readings`` / ``serve_ml_predictions``.

:func:`encode_scored` scores readings with ``bundles.batch.score_groups`` (the HTTP
path's code) and writes each row's stored columns straight from the column-oriented
result, without building ``score_readings``' per-reading verdict dicts first: at
tens of thousands of readings a second those dicts were a fifth of the stream
scorer's CPU. The rows come out in PostgreSQL's binary COPY format, encoded column
by column (:mod:`pipelines.pgcopy`): asyncpg's record-by-record encoder and the
tuples it needed were most of the rest. A unit test holds the stored values to
what the dicts say.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from hashlib import blake2b
from itertools import repeat
from typing import NamedTuple

import numpy as np
import orjson

from serve_ml.bundles.batch import History, Reading, Screen, score_groups
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.scoring import GroupScore, materialise
from serve_ml.core.errors import FeatureError, ServeMLError
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
from serve_ml.pipelines.verdicts import Judged

R_COLS = ("time", "equipment_id", "reading_key", "power", "features", "source", "source_partition",
          "source_offset")
P_COLS = ("time", "equipment_id", "reading_key", "power", "model_version", "anomaly", "score", "modalities",
          "fault_label", "fault_probabilities", "source", "source_partition", "source_offset", "rul", "rul_lower",
          "rul_upper")


def reading_key(features_json: bytes, reading_id: str | None) -> int:
    """What tells one reading from another at the same equipment and time: the
    producer's ``reading_id`` when it gives one, else the reading's own content (its
    ``features`` object, byte for byte as sent). A redelivery of the same message
    has the same key and is stored once; a different reading at the same timestamp
    has another and is stored too, so nobody can block a reading by claiming its
    timestamp first. A producer that might send one reading twice written
    differently (other spacing or number forms) gives it a ``reading_id``.
    64 bits of BLAKE2b (as a signed ``bigint``): not forgeable into a collision."""
    data = b"id:" + reading_id.encode() if reading_id is not None else features_json
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little", signed=True)


_digest8 = partial(blake2b, digest_size=8)


def reading_keys(features_json: Sequence[bytes], reading_ids: list[str | None]) -> np.ndarray:
    """:func:`reading_key` of every row, as int64, hashed with C-level maps (0.47 µs
    a reading where a call per row took 0.66)."""
    data = [f if i is None else b"id:" + i.encode() for f, i in zip(features_json, reading_ids, strict=True)] \
        if reading_ids.count(None) != len(reading_ids) else features_json
    return np.frombuffer(b"".join(map(blake2b.digest, map(_digest8, data))), dtype="<i8")


class Origin(NamedTuple):
    """One reading as it arrived: when it was taken, its features, where from.
    Named tuples here: the stream builds one of each per reading."""

    ts: dt.datetime
    features: Mapping[str, float]
    source: str
    partition: int | None = None
    offset: int | None = None
    reading_id: str | None = None
    features_json: bytes | None = None
    """``features`` as the producer wrote them (``decode.StreamReading``); None:
    written here."""


@dataclass(slots=True)
class Rows:
    """A micro-batch encoded for COPY in PostgreSQL's binary format (one chunk of
    rows per scored group, see :mod:`pipelines.pgcopy`), with what the alert logic
    needs of each row."""

    readings: list[bytes]
    predictions: list[bytes]
    judged: list[Judged]

    def __len__(self) -> int:
        return sum(map(len, self.judged))

    def extend(self, other: Rows) -> None:
        self.readings += other.readings
        self.predictions += other.predictions
        self.judged += other.judged

    def copy_readings(self) -> memoryview:
        """The ``serve_ml_readings`` rows (columns :data:`R_COLS`) as one COPY payload."""
        return _payload(self.readings)

    def copy_predictions(self) -> memoryview:
        """The ``serve_ml_predictions`` rows (columns :data:`P_COLS`) as one COPY payload."""
        return _payload(self.predictions)

    def add_group(self, g: GroupScore, origins: Sequence[Origin]) -> list[tuple[int, FeatureError]]:
        """Append the rows of one scored group (``origins[i]`` is row ``i``). Rows
        the scorer could not judge (non-finite inputs) are not stored; they come
        back as ``(row, error)`` for the dead-letter topic."""
        m = g.bundle.manifest
        eq, power, version = m.equipment_id, m.power, m.model_version
        mod_json = _modalities_json(g)
        if mod_json is None:  # a non-finite model output: let orjson write it (as null)
            results = materialise(g)
            mod_json = Var([None if isinstance(r, FeatureError) else orjson.dumps(r["modalities"]) for r in results])  # type: ignore[assignment, index]
        labels, probs = _classifier_columns(g)
        rejected = [(i, FeatureError(reason)) for i, reason in sorted(g.bad_rows.items())]
        score, anomaly = g.score, g.anomaly
        flags = [(s.name, s.anomaly) for s in g.modalities if s.present]
        errs = [(s.name, float(s.threshold), s.errors) for s in g.modalities if s.present]
        head = g.bundle.rul
        rul = None if g.rul is None or head is None else np.stack([g.rul, *head.bounds(g.rul)])
        inputs, faults = g.inputs, g.faults
        if rejected:
            keep = [i for i in range(len(origins)) if i not in g.bad_rows]
            origins = [origins[i] for i in keep]
            score, anomaly = score[keep], anomaly[keep]
            rul = None if rul is None else rul[:, keep]
            mod_json = mod_json.take(keep)  # type: ignore[union-attr]
            labels, probs = ([col[i] for i in keep] for col in (labels, probs))
            flags = [(name, an[keep]) for name, an in flags]  # type: ignore[index]
            errs = [(name, t, e[keep]) for name, t, e in errs]  # type: ignore[index]
            inputs = None if inputs is None else {f: c[keep] for f, c in inputs.items()}
            faults = None if faults is None else {f: c[keep] for f, c in faults.items()}
        n = len(origins)
        if n == 0:
            return rejected
        times = [o.ts for o in origins]
        sources = {o.source for o in origins}
        source = Const(sources.pop().encode()) if len(sources) == 1 else Var([o.source.encode() for o in origins])
        partition = nullable(INT4, [o.partition for o in origins])
        offset = nullable(INT8, [o.offset for o in origins])
        time_us = timestamps_us(times)
        time_col, eq_col, power_col = Fixed(TIMESTAMPTZ, time_us), Const(eq.encode()), Const(power.encode())
        sent = [o.features_json for o in origins]
        features: list[bytes] = [orjson.dumps(o.features) if f is None else f
                                 for f, o in zip(sent, origins, strict=True)] if None in sent else sent  # type: ignore[assignment]
        keys = reading_keys(features, [o.reading_id for o in origins])
        key_col = Fixed(INT8, keys)
        self.readings.append(encode_rows(n, [
            time_col, eq_col, key_col, power_col, Var(features), source, partition, offset]))
        self.predictions.append(encode_rows(n, [
            time_col, eq_col, key_col, power_col, Const(version.encode()), Fixed(BOOL, anomaly), Fixed(FLOAT8, score),
            mod_json, Var(labels) if g.classifier_ran else Const(None),  # type: ignore[list-item]
            Var(probs) if g.classifier_ran else Const(None), source, partition, offset,
            *([Fixed(FLOAT8, None)] * 3 if rul is None else [Fixed(FLOAT8, c) for c in rul])]))
        label_s = [None if b is None else b.decode() for b in labels] if g.classifier_ran else labels
        self.judged.append(Judged(eq, power, version, times, time_us, anomaly, score, label_s, flags, keys,  # type: ignore[arg-type]
                                  None if rul is None else rul[0], None if head is None else head.spec.alert_below,
                                  inputs, faults=faults or None, errors=errs,  # type: ignore[arg-type]
                                  probabilities=probs if g.classifier_ran else None,
                                  rul_band=None if rul is None else rul[1:],
                                  rul_unit=None if head is None else head.spec.unit))
        return rejected


def encode_groups(catalog: Catalog, readings: Sequence[Reading], origins: Sequence[Origin], *,
                  enable_xgb: bool, history: History | None = None,
                  screen: Screen | None = None) -> Iterator[tuple[Rows, list[tuple[int, str]]]]:
    """Score ``readings`` (``origins[i]`` says where reading ``i`` came from) and encode
    them for COPY, one group (equipment, version, feature names) at a time, so a caller
    can yield to its event loop between groups. Yields each group's rows and, for each
    reading that cannot be stored, its position and the reason (unknown equipment,
    power, version or features; a non-finite value)."""
    for idx, scored in score_groups(catalog, readings, enable_xgb=enable_xgb, history=history, screen=screen):
        rows: Rows = Rows([], [], [])
        if isinstance(scored, ServeMLError):
            yield rows, [(i, scored.message) for i in idx]
            continue
        rejected = rows.add_group(scored, [origins[i] for i in idx])
        yield rows, [(idx[row], error.message) for row, error in rejected]


def encode_scored(catalog: Catalog, readings: Sequence[Reading], origins: Sequence[Origin], *,
                  enable_xgb: bool, history: History | None = None,
                  screen: Screen | None = None) -> tuple[Rows, list[tuple[int, str]]]:
    """:func:`encode_groups` in one call: all the rows, and every rejected reading."""
    rows, rejected = Rows([], [], []), []
    for group_rows, group_rejected in encode_groups(catalog, readings, origins, enable_xgb=enable_xgb,
                                                    history=history, screen=screen):
        rows.extend(group_rows)
        rejected += group_rejected
    return rows, rejected


def _payload(chunks: list[bytes]) -> memoryview:
    # a memoryview: asyncpg takes bytes for a file name
    return memoryview(b"".join([HEADER, *chunks, TRAILER]))


def _modalities_json(g: GroupScore) -> Parts | None:
    """Each row's per-modality detail as JSON pieces: constant text, then per scored
    modality the error (orjson writes the column's numbers in C, the shortest
    round-trip form, as ``repr`` does) and the flag, as ``materialise`` builds the
    document. None when a value is not finite (``repr`` would not be JSON)."""
    pieces: list[bytes | Sequence[bytes]] = []
    text = b"{"
    for s in g.modalities:
        threshold = float(s.threshold)  # a numpy scalar's repr is not JSON
        if not math.isfinite(threshold):
            return None
        text += (b"," if text != b"{" or pieces else b"") + orjson.dumps(s.name) + b':{"status":'
        if not s.present:
            text += b'"absent","threshold":' + repr(threshold).encode()
            text += (b',"missing":' + orjson.dumps(list(s.missing)) if s.missing else b"") + b"}"
            continue
        if not np.isfinite(s.errors).all():  # type: ignore[arg-type]
            return None
        tail = b',"threshold":' + repr(threshold).encode() + b',"anomaly":'
        flags = np.array([tail + b"false}", tail + b"true}"], dtype=object)
        pieces += [text + b'"scored","error":',
                   orjson.dumps(s.errors, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b","),
                   flags[s.anomaly.astype(np.intp)].tolist()]  # type: ignore[union-attr]
        text = b""
    return Parts([*pieces, text + b"}"])


def _classifier_columns(g: GroupScore) -> tuple[list[bytes | None], list[bytes | None]]:
    """Per row, the fault label and the ``{class: probability}`` document; None for
    both where the classifier did not run (a cascade's gate passed the row)."""
    if not g.classifier_ran:
        return [None] * g.n, [None] * g.n
    classes = g.bundle.classifier.spec.classes  # type: ignore[union-attr]
    names = np.array([c.encode() for c in classes], dtype=object)
    probs, best = g.probabilities, g.labels
    assert probs is not None and best is not None  # the classifier ran
    if g.classified is None:
        return names[best].tolist(), _probability_documents(classes, probs)  # type: ignore[return-value]
    rows = np.flatnonzero(g.classified)
    labels, out = np.full(g.n, None, dtype=object), np.full(g.n, None, dtype=object)
    labels[rows] = names[best[rows]]
    out[rows] = np.array(_probability_documents(classes, probs[rows]), dtype=object)
    return labels.tolist(), out.tolist()


def _probability_documents(classes: Sequence[str], probs: np.ndarray) -> list[bytes]:
    """``{class: p, ...}`` per row of ``probs`` (rows x classes), as ``orjson.dumps``
    of the dict writes it: each column's numbers written in one orjson call, each row
    joined from its pieces by a C-level map (a dict and a dump per row cost 1.5 µs)."""
    if not len(probs):
        return []
    columns = np.ascontiguousarray(probs.T)
    pieces: list[Iterable[bytes]] = []
    for j, name in enumerate(classes):
        pieces.append(repeat((b"{" if j == 0 else b",") + orjson.dumps(name) + b":"))
        pieces.append(orjson.dumps(columns[j], option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b","))
    pieces.append(repeat(b"}"))
    return list(map(b"".join, zip(*pieces, strict=False)))  # the repeats are endless; the columns end it
