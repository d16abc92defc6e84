"""The prepare stage of the stream scorer: a micro-batch of Kafka records decoded,
scored and encoded for COPY (``Prepared``), with the records that cannot be stored
and why. Pure CPU in slices that yield to the event loop (see ``prepare_batch``)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter
from typing import overload

from aiokafka import ConsumerRecord, TopicPartition

from serve_ml.bundles.batch import Reading, Screen
from serve_ml.bundles.catalog import Catalog
from serve_ml.core.settings import Settings
from serve_ml.pipelines.decode import Rejected, StreamReading, record_time
from serve_ml.pipelines.decode_many import decode_many
from serve_ml.pipelines.encode import Origin, Rows, encode_groups
from serve_ml.pipelines.windows import FetchHistory, StreamWindows

PREPARE_SLICE = 500  # records decoded, or encoded, between two turns of the event loop


_value, _partition, _offset = attrgetter("value"), attrgetter("partition"), attrgetter("offset")
_reading, _ts, _features = attrgetter("reading"), attrgetter("ts"), attrgetter("reading.features")
_reading_id, _features_json = attrgetter("reading_id"), attrgetter("features_json")
_ALL_READ = {StreamReading}
_new = tuple.__new__


class _RecordTimes(Sequence[dt.datetime | None]):
    """Each record's own timestamp (the default for a message without ``ts``),
    worked out only for the messages that ask for it."""

    def __init__(self, records: list[ConsumerRecord]) -> None:
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, i: int) -> dt.datetime | None: ...
    @overload
    def __getitem__(self, i: slice) -> list[dt.datetime | None]: ...

    def __getitem__(self, i: int | slice) -> dt.datetime | None | list[dt.datetime | None]:
        if isinstance(i, slice):
            return [record_time(r.timestamp) for r in self._records[i]]
        return record_time(self._records[i].timestamp)


@dataclass(slots=True)
class Prepared:
    """A decoded, scored micro-batch waiting for its write."""

    consumed: int
    rows: Rows
    dead: list[tuple[ConsumerRecord, str]]
    offsets: dict[TopicPartition, int]
    records: list[ConsumerRecord]
    """Every record taken, to find those the write refuses as conflicts."""
    epoch: int
    """The consumer's epoch when the batch was taken: its offsets are committed only
    under the same one (see ``StreamScorer._commit``)."""


async def prepare_batch(records: list[ConsumerRecord], offsets: dict[TopicPartition, int], epoch: int,
                        catalog: Catalog, s: Settings, windows: StreamWindows | None = None,
                        fetch: FetchHistory | None = None, screen: Screen | None = None) -> Prepared:
    """Decode, score and encode one micro-batch. Pure CPU, done in slices that yield
    to the event loop: the write in flight needs the loop to stream its COPY data
    and read the server's answers, or the two stages would not overlap. Scoring
    takes the whole micro-batch at once, so each equipment's readings are one
    vectorised group (scored in 100-record slices, groups of a few rows cost
    twice the CPU per reading). ``windows`` keeps the sequence bundles' windows
    (refilled from ``fetch`` when short); ``screen`` is the data-quality gate."""
    now = dt.datetime.now(dt.UTC)
    out = Prepared(len(records), Rows([], [], []), [], offsets, records, epoch)
    readings: list[Reading] = []
    origins: list[Origin] = []
    accepted: list[ConsumerRecord] = []
    for start in range(0, len(records), PREPARE_SLICE):
        chunk = records[start:start + PREPARE_SLICE]
        decoded = decode_many(list(map(_value, chunk)), _RecordTimes(chunk), max_bytes=s.max_message_bytes,
                              now=now, max_age_s=s.accepted_age_s(), max_future_s=s.max_reading_future_s)
        if set(map(type, decoded)) == _ALL_READ:  # the usual chunk: its columns with C-level maps
            readings += map(_reading, decoded)
            origins += map(_new, repeat(Origin), zip(
                map(_ts, decoded), map(_features, decoded), repeat("kafka"), map(_partition, chunk),
                map(_offset, chunk), map(_reading_id, decoded), map(_features_json, decoded)))
            accepted += chunk
            await asyncio.sleep(0)
            continue
        for rec, r in zip(chunk, decoded, strict=True):
            if isinstance(r, Rejected):
                out.dead.append((rec, str(r)))
                continue
            readings.append(r.reading)
            origins.append(Origin(r.ts, r.reading.features, "kafka", rec.partition, rec.offset,
                                  r.reading_id, r.features_json))
            accepted.append(rec)
        await asyncio.sleep(0)
    if windows is not None:
        windows.bind(origins)
        if fetch is not None and readings:
            await windows.refill(catalog, origins, [r.equipment_id for r in readings], fetch)
    encoded = 0
    for rows, rejected in encode_groups(catalog, readings, origins, enable_xgb=s.enable_xgb, history=windows,
                                        screen=screen):
        out.rows.extend(rows)
        out.dead += [(accepted[i], reason) for i, reason in rejected]
        encoded += len(rows) + len(rejected)
        if encoded >= PREPARE_SLICE:
            encoded = 0
            await asyncio.sleep(0)
    return out
