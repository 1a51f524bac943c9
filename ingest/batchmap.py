"""Mapping and validation of a whole chunk of rows, with a fused path for common rows.

The row path (`RowMapper.map` -> wire dict -> `EventValidator.validate` -> `Touchpoint`
-> `to_json`) parses each time twice, formats it twice and walks every field three
times; it was ~60% of `journeys ingest`'s CPU (docs/performance.md "The importer").
`ChunkMapper` checks each row once for the shape almost every export has (string
fields within their limits, a canonical UTC time or epoch milliseconds, flat
`properties`/`context` objects, no extra columns) and builds the event and its JSON
bytes in one go. Any row that is not plainly valid takes the row path unchanged, so
every rejection and its reason come from the same code as before:
tests/unit/test_ingest_batchmap.py checks on generated rows, malformed ones included,
that both paths give the same events, bytes and rejections.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

import orjson

from ingest.mapping import RowMapper, row_bytes
from ingest.readers import Chunk, table_records
from journeys.events import (
    MAX_CHANNEL,
    MAX_CONTEXT_BYTES,
    MAX_EVENT_ID,
    MAX_ID,
    MAX_PROPERTIES_BYTES,
    MAX_SOURCE,
    MAX_TIME_MS,
    MAX_TYPE,
    MIN_TIME_MS,
    EventValidator,
    Rejection,
    Touchpoint,
)
from journeys.timeutil import ms_to_iso

# "2026-03-01T00:00:03.225Z": exactly what `ms_to_iso` writes, so the text is reused
_CANONICAL = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z")
_DIGITS = re.compile(r"[0-9]{1,15}")  # epoch numbers a float holds exactly
_FLAT = frozenset({str, int, bool, type(None)})  # + finite floats: `_jsonable` keeps them
_EPOCH_DAY = date(1970, 1, 1)
_DAY_MS = 86_400_000


@dataclass
class Mapped:
    """One chunk's outcome: accepted events with their JSON and row numbers, and the
    rejections with theirs (in file order within each list)."""

    good: list[Touchpoint] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)  # `tp.to_json()` of each event
    good_rows: list[int] = field(default_factory=list)
    bad: list[Rejection] = field(default_factory=list)
    bad_rows: list[int] = field(default_factory=list)


class ChunkMapper:
    """Built once per file from its `RowMapper`; `map(chunk)` maps and validates a chunk."""

    def __init__(self, mapper: RowMapper, validator: EventValidator) -> None:
        self.mapper = mapper
        self.validator = validator
        m = mapper.m
        self._mapped = mapper._mapped
        self._days: dict[str, int | None] = {}
        # constants are used as they are (no strip), as `RowMapper._map` does
        self.fused = (m.time_format is None
                      and _constant_ok(m.constant_type, MAX_TYPE)
                      and _constant_ok(m.constant_channel, MAX_CHANNEL)
                      and _constant_ok(m.constant_source, MAX_SOURCE, required=False)
                      and (m.constant_channel is None or validator.channels is None
                           or m.constant_channel in validator.channels))
        # whole Arrow chunks (CSV, Parquet) when the file has its event id column
        self.columnar = self.fused and not mapper.derive_ids

    def map(self, chunk: Chunk) -> Mapped:
        table = chunk.table
        if table is not None and self.columnar:
            from ingest import columnar  # pyarrow: CSV/Parquet only (~90 MiB for JSONL)

            if columnar.usable(table, self._mapped):
                return self._map_table(chunk, table)
        return self._map_rows(chunk.records, chunk.raws, chunk.rows)

    def _map_table(self, chunk: Chunk, table: Any) -> Mapped:
        """Columnar first (ingest.columnar); the rows it leaves take `_map_rows`, then
        both are merged back into file order."""
        import pyarrow as pa

        from ingest import columnar

        if not isinstance(table, pa.Table):
            table = pa.Table.from_batches([table])
        done = columnar.map_table(table, self.mapper.m, self.validator.channels)
        rows = chunk.rows
        if len(done.positions) == len(rows):
            return Mapped(done.good, done.values, rows, [], [])
        taken = set(done.positions)
        rest = [i for i in range(len(rows)) if i not in taken]
        out = self._map_rows(table_records(table.take(rest)), [chunk.raws[i] for i in rest],
                             [rows[i] for i in rest])
        out.good += done.good
        out.values += done.values
        out.good_rows += [rows[i] for i in done.positions]
        order = sorted(range(len(out.good_rows)), key=out.good_rows.__getitem__)
        out.good = [out.good[i] for i in order]
        out.values = [out.values[i] for i in order]
        out.good_rows = [out.good_rows[i] for i in order]
        return out

    def _map_rows(self, records: list[Any], raws: list[bytes | None],
                  rows: list[int]) -> Mapped:
        out = Mapped()
        fused = self._fused if self.fused else None
        for record, raw, row in zip(records, raws, rows, strict=True):
            if fused is not None and type(record) is dict:
                try:
                    done = fused(record)
                except Exception:  # the row path names what is wrong
                    done = None
                if done is not None:
                    out.good.append(done[0])
                    out.values.append(done[1])
                    out.good_rows.append(row)
                    continue
            self._row_path(out, record, raw, row)
        return out

    def _row_path(self, out: Mapped, record: Any, raw: bytes | None, row: int) -> None:
        """The row-at-a-time path: every rejection and its reason come from here."""
        if isinstance(record, str):  # unparseable line
            out.bad.append(Rejection(record, raw or b""))
            out.bad_rows.append(row)
            return
        wire = self.mapper.map(record)
        # the original row as JSON is built for rejected rows only
        result = (Rejection(wire, b"", _event_id(record)) if isinstance(wire, str)
                  else self.validator.validate(wire, b""))
        if isinstance(result, Rejection):
            original = raw if raw is not None else row_bytes(record)
            out.bad.append(replace(result, raw=original))
            out.bad_rows.append(row)
        else:
            out.good.append(result)
            out.values.append(result.to_json())
            out.good_rows.append(row)

    def _fused(self, r: dict[str, Any]) -> tuple[Touchpoint, bytes] | None:
        """The event and its bytes when the row is plainly valid, else None (row path).

        Each check mirrors what `RowMapper._map` then `EventValidator.validate` do to a
        value of that type; anything else (other types, blanks, limits, odd times,
        nested objects, extra columns) is left to them."""
        if not r.keys() <= self._mapped:
            return None
        m = self.mapper.m
        g = r.get
        eid = _required(g(m.event_id) if m.event_id else None, MAX_EVENT_ID)
        etype = (m.constant_type if m.constant_type is not None
                 else _required(g(m.type) if m.type else None, MAX_TYPE))
        channel = (m.constant_channel if m.constant_channel is not None
                   else _required(g(m.channel) if m.channel else None, MAX_CHANNEL))
        if eid is None or etype is None or channel is None:
            return None
        channels = self.validator.channels
        if channels is not None and channel not in channels:
            return None
        when = self._time(g(m.occurred_at))
        if when is None:
            return None
        customer = _optional(g(m.customer_id) if m.customer_id else None, MAX_ID) or None
        anonymous = _optional(g(m.anonymous_id) if m.anonymous_id else None, MAX_ID) or None
        if customer is None and anonymous is None:
            return None
        source = m.constant_source
        if source is None:
            source = _optional(g(m.source) if m.source else None, MAX_SOURCE)
        props = _flat_object(g(m.properties) if m.properties else None)
        context = _flat_object(g(m.context) if m.context else None)
        if props is None or context is None:
            return None
        value = orjson.dumps({
            "event_id": eid, "type": etype, "channel": channel, "occurred_at": when[1],
            "customer_id": customer, "anonymous_id": anonymous, "source": source,
            "properties": props, "context": context})
        # each object's bytes are part of the event's: only a large event needs its own
        if len(value) > MAX_CONTEXT_BYTES and (
                len(orjson.dumps(props)) > MAX_PROPERTIES_BYTES
                or len(orjson.dumps(context)) > MAX_CONTEXT_BYTES):
            return None
        return Touchpoint(eid, etype, channel, when[0], customer, anonymous, source,
                          props, context), value

    def _time(self, v: Any) -> tuple[int, str] | None:
        """(epoch ms, its `ms_to_iso` text) for a canonical UTC time or epoch number in
        range; None for anything else (the row path parses or rejects it)."""
        if type(v) is str:
            if _CANONICAL.fullmatch(v):
                day = self._days.get(v[:10], -1)
                if day == -1:
                    day = self._days[v[:10]] = _day_ms(v[:10])
                if day is None:
                    return None
                ms = (day + int(v[11:13]) * 3_600_000 + int(v[14:16]) * 60_000
                      + int(v[17:19]) * 1000 + int(v[20:23]))
                return (ms, v) if MIN_TIME_MS <= ms < MAX_TIME_MS else None
            if not _DIGITS.fullmatch(v):
                return None
            number: float | int = float(v)
        elif type(v) is int:
            number = v
        else:
            return None
        # `RowMapper._time` on a number (the validator then takes the int as it is)
        ms = int(float(number) * 1000) if self.mapper.m.time_unit == "s" else int(number)
        return (ms, ms_to_iso(ms)) if MIN_TIME_MS <= ms < MAX_TIME_MS else None


def _day_ms(text: str) -> int | None:
    """Epoch ms of a "YYYY-MM-DD" day, when `ms_to_iso` writes that day the same way."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None
    return (day - _EPOCH_DAY).days * _DAY_MS if day.isoformat() == text else None


def _required(v: Any, limit: int) -> str | None:
    """A required text field: `RowMapper._text` strips it; the validator wants it
    non-blank and within `limit`."""
    if type(v) is not str:
        return None
    s = v.strip()
    return s if s and len(s) <= limit else None


class _Unfit(Exception):
    """The row is not for the fused path (the row path maps, checks or rejects it)."""


def _optional(v: Any, limit: int) -> str | None:
    """An optional text field as the row path leaves it: None for a missing or empty
    value, else the stripped text (possibly ""); raises _Unfit for anything else."""
    if v is None or v == "":
        return None
    if type(v) is not str:
        raise _Unfit
    s = v.strip()
    if len(s) > limit:
        raise _Unfit
    return s


def _flat_object(v: Any) -> dict[str, Any] | None:
    """`properties`/`context` as the row path builds them, when the value is a flat
    object (or its JSON text, or blank); None otherwise. Flat means one level, so the
    nesting rule holds, and values `_jsonable` keeps as they are."""
    if v is None or v == "":
        return {}
    if type(v) is str:
        try:
            v = orjson.loads(v)
        except orjson.JSONDecodeError:
            return None
    if type(v) is not dict:
        return None
    for key, item in v.items():
        if type(key) is not str:
            return None
        t = type(item)
        if t not in _FLAT and not (t is float and math.isfinite(item)):
            return None
    return v


def _constant_ok(value: str | None, limit: int, *, required: bool = True) -> bool:
    return value is None or (len(value) <= limit and (bool(value.strip()) or not required))


def _event_id(record: dict[str, Any]) -> str | None:
    value = record.get("event_id")
    return value if isinstance(value, str) else None
