"""Columnar mapping of a CSV/Parquet chunk: the fused path's checks as Arrow kernels.

`ChunkMapper`'s fused path still spent ~10–15 µs of Python per row (docs/performance.md
"Columnar chunks"). For a chunk held as an Arrow table whose columns are all mapped
text columns, `map_table` checks each field of every row at once with pyarrow.compute
(plain printable-ASCII text within its limit, known channel, a time written exactly as
`ms_to_iso` writes it, `properties`/`context` blank or a flat object already in
orjson's own bytes) and assembles each accepted row's JSON bytes with a C string join.
It is deliberately narrower than the fused path: a row that fails any check is handed
back to the caller, which maps it through `ChunkMapper` (fused or row path) exactly as
before, so every rejection and reason still comes from the row path
(tests/unit/test_ingest_batchmap.py compares all three paths).
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any, NamedTuple

import orjson
import pyarrow as pa
import pyarrow.compute as pc

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
    Touchpoint,
)

# printable ASCII without '"' and '\': orjson writes such text as it is, between quotes;
# no space at either end, so `str.strip()` leaves it as it is
_PLAIN = r"^[!#-\[\]-~](?:[ !#-\[\]-~]*[!#-\[\]-~])?$"
# exactly what `ms_to_iso` writes (the day is checked apart)
_CANONICAL = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
              r"\.[0-9]{3}Z$")
_FLAT = frozenset({str, int, bool, type(None)})
_EPOCH_DAY = date(1970, 1, 1)
_NULL = pa.scalar(None, pa.string())


class Columnar:
    """The accepted rows of a chunk, column by column (positions into the chunk)."""

    __slots__ = ("good", "positions", "values")

    def __init__(self, positions: list[int], good: list[Touchpoint],
                 values: list[bytes]) -> None:
        self.positions = positions
        self.good = good
        self.values = values


def usable(table: pa.Table, mapped: frozenset[str | None]) -> bool:
    """Whether `map_table` applies: every column is a mapped one (extra columns go to
    `properties` on the row path) and holds text (other types keep their row-path
    conversions)."""
    return (set(table.column_names) <= mapped
            and all(pa.types.is_string(t) or pa.types.is_large_string(t)
                    or pa.types.is_null(t) for t in table.schema.types))


def map_table(table: pa.Table, m: Any, channels: frozenset[str] | None) -> Columnar:
    """Map the rows that pass every check; `m` is the file's `ColumnMapping`.

    Only called when `ChunkMapper.fused` holds (constants valid, no time format) and the
    file has its event id column (no derived ids)."""
    if table.num_rows == 0:  # (a header-only CSV) Arrow infers no type for empty literals
        return Columnar([], [], [])
    checked = _check(table, m, channels)
    positions = pc.indices_nonzero(checked.ok)
    if len(positions) == 0:
        return Columnar([], [], [])
    return _build(checked, m, positions)


class _Checked(NamedTuple):
    """A chunk's columns as the wire needs them (None: a constant of the mapping), and
    `ok`: the rows that pass every check."""

    ok: pa.Array
    event_id: pa.Array
    etype: pa.Array | None
    channel: pa.Array | None
    customer: pa.Array
    anonymous: pa.Array
    source: pa.Array | None
    when: pa.Array
    ms: pa.Array
    props: pa.Array
    props_json: pa.Array
    context: pa.Array
    context_json: pa.Array


def _check(table: pa.Table, m: Any, channels: frozenset[str] | None) -> _Checked:
    """Every rule of the row path, as vectorised checks over the chunk's columns."""
    n = table.num_rows

    def column(name: str | None) -> pa.Array | None:
        if name is None or name not in table.column_names:
            return None
        col = table.column(name).combine_chunks()
        return col.cast(pa.string()) if not pa.types.is_string(col.type) else col

    ok = pa.array([True] * n, pa.bool_())

    def required(name: str | None, limit: int) -> pa.Array:
        nonlocal ok
        col = column(name)
        if col is None:
            ok = pa.array([False] * n, pa.bool_())
            return pa.nulls(n, pa.string())
        good = pc.and_(pc.match_substring_regex(col, _PLAIN),
                       pc.less_equal(pc.utf8_length(col), limit))
        ok = pc.and_(ok, pc.fill_null(good, False))
        return col

    def optional(name: str | None, limit: int) -> pa.Array:
        """Blank (null or "") -> null; else plain text within the limit."""
        nonlocal ok
        col = column(name)
        if col is None:
            return pa.nulls(n, pa.string())
        blank = pc.fill_null(pc.equal(col, ""), True)
        good = pc.and_(pc.match_substring_regex(col, _PLAIN),
                       pc.less_equal(pc.utf8_length(col), limit))
        ok = pc.and_(ok, pc.or_(blank, pc.fill_null(good, False)))
        return pc.if_else(blank, _NULL, col)

    event_id = required(m.event_id, MAX_EVENT_ID)
    etype = (None if m.constant_type is not None else required(m.type, MAX_TYPE))
    channel = (None if m.constant_channel is not None else required(m.channel, MAX_CHANNEL))
    if channel is not None and channels is not None:
        known = pa.array(sorted(channels), pa.string())
        ok = pc.and_(ok, pc.fill_null(pc.is_in(channel, value_set=known), False))
    customer = optional(m.customer_id, MAX_ID)
    anonymous = optional(m.anonymous_id, MAX_ID)
    has_id = pc.or_(pc.is_valid(customer), pc.is_valid(anonymous))
    ok = pc.and_(ok, has_id)
    source = None if m.constant_source is not None else optional(m.source, MAX_SOURCE)
    when, ms, ok_time = _times(column(m.occurred_at), n)
    ok = pc.and_(ok, ok_time)
    props, props_json, ok_props = _objects(column(m.properties), n, MAX_PROPERTIES_BYTES)
    context, context_json, ok_context = _objects(column(m.context), n, MAX_CONTEXT_BYTES)
    ok = pc.and_(ok, pc.and_(ok_props, ok_context))
    return _Checked(ok, event_id, etype, channel, customer, anonymous, source, when, ms,
                    props, props_json, context, context_json)


def _build(c: _Checked, m: Any, positions: pa.Array) -> Columnar:
    """The rows at `positions`: their wire JSON joined column-wise, and Touchpoints."""

    def take(a: pa.Array | None) -> pa.Array | None:
        return None if a is None else a.take(positions)

    eid_t, type_t, channel_t = take(c.event_id), take(c.etype), take(c.channel)
    cust_t, anon_t, source_t = take(c.customer), take(c.anonymous), take(c.source)
    when_t, ms_t = take(c.when), take(c.ms)
    props_t, pjson_t, ctx_t, cjson_t = take(c.props), take(c.props_json), take(c.context), \
        take(c.context_json)
    parts: list[Any] = [
        '{"event_id":', _quoted(eid_t),
        ',"type":', _quoted(type_t) if type_t is not None else _literal(m.constant_type),
        ',"channel":', (_quoted(channel_t) if channel_t is not None
                        else _literal(m.constant_channel)),
        ',"occurred_at":"', when_t, '","customer_id":', _quoted(cust_t),
        ',"anonymous_id":', _quoted(anon_t),
        ',"source":', _quoted(source_t) if source_t is not None else _literal(m.constant_source),
        ',"properties":', pjson_t, ',"context":', cjson_t, "}"]
    count = len(positions)
    # literals as arrays: the kernel broadcasts scalar arguments ~2x slower
    joined = pc.binary_join_element_wise(
        *(pa.repeat(p, count) if isinstance(p, str) else p for p in parts), "")
    values = _pylist(pc.cast(joined, pa.binary()))
    good = list(map(
        Touchpoint, _pylist(eid_t),
        _pylist(type_t) if type_t is not None else _repeat(m.constant_type, count),
        _pylist(channel_t) if channel_t is not None else _repeat(m.constant_channel, count),
        _pylist(ms_t), _pylist(cust_t), _pylist(anon_t),
        _pylist(source_t) if source_t is not None else _repeat(m.constant_source, count),
        props_t.to_pylist(), ctx_t.to_pylist()))  # type: ignore[union-attr]
    # each object within its own limit (checked above), so the event's size is fine
    # whatever it is: what the fused path concludes after weighing them alone
    return Columnar(_pylist(positions), good, values)


def _pylist(a: pa.Array | None) -> list[Any]:
    """The values as Python objects (no nulls in number arrays here): through NumPy,
    ~3x faster than `Array.to_pylist()`, which boxes every value as a scalar first."""
    assert a is not None
    return a.to_numpy(zero_copy_only=False).tolist()


def _repeat(value: Any, count: int) -> list[Any]:
    return [value] * count


def _literal(value: str | None) -> str:
    return orjson.dumps(value).decode()


def _quoted(col: pa.Array | None) -> pa.Array:
    """JSON of plain text (no escapes needed) or null."""
    assert col is not None
    return pc.if_else(pc.is_valid(col),
                      pc.binary_join_element_wise('"', pc.fill_null(col, ""), '"', ""),
                      "null")


def _times(col: pa.Array | None, n: int) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(text, epoch ms, ok) for times in `ms_to_iso`'s own form within the range."""
    if col is None:
        return pa.nulls(n, pa.string()), pa.nulls(n, pa.int64()), pa.array([False] * n, pa.bool_())
    canonical = pc.fill_null(pc.match_substring_regex(col, _CANONICAL), False)
    text = pc.if_else(canonical, col, "2000-01-01T00:00:00.000Z")
    day = pc.utf8_slice_codeunits(text, 0, 10)
    days = pc.unique(day)
    day_ms = pa.array([_day_ms(d) for d in days.to_pylist()], pa.int64())
    ms = pc.take(day_ms, pc.index_in(day, value_set=days))
    for start, stop, scale in ((11, 13, 3_600_000), (14, 16, 60_000), (17, 19, 1000),
                               (20, 23, 1)):
        part = pc.cast(pc.utf8_slice_codeunits(text, start, stop), pa.int64())
        ms = pc.add(ms, pc.multiply(part, scale))
    ok = pc.and_(canonical, pc.fill_null(pc.and_(pc.greater_equal(ms, MIN_TIME_MS),
                                                 pc.less(ms, MAX_TIME_MS)), False))
    return text, ms, ok


def _day_ms(text: str) -> int | None:
    """Epoch ms of a "YYYY-MM-DD" day, when `ms_to_iso` writes that day the same way."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None
    return (day - _EPOCH_DAY).days * 86_400_000 if day.isoformat() == text else None


def _objects(col: pa.Array | None, n: int, limit: int
             ) -> tuple[_Shared, pa.Array, pa.Array]:
    """(objects, their JSON, ok): blank -> {}; else a flat object whose text is exactly
    orjson's bytes for it, checked once per distinct text (exports repeat them)."""
    if col is None:
        return (_Shared([{}], pa.array([0] * n, pa.int32())),
                pa.array(["{}"] * n, pa.string()), pa.array([True] * n, pa.bool_()))
    blank = pc.fill_null(pc.equal(col, ""), True)
    texts = pc.if_else(blank, "{}", col)
    uniques = pc.unique(texts)
    parsed = [_flat(t) for t in uniques.to_pylist()]
    fine = pa.array([p is not None for p in parsed], pa.bool_())
    where = pc.index_in(texts, value_set=uniques)
    ok = pc.and_(pc.take(fine, where),
                 pc.less_equal(pc.binary_length(texts), limit))
    # one dict per distinct text, shared by its rows (Touchpoints are read-only)
    objects = _Shared(parsed, where)
    return objects, texts, ok


class _Shared:
    """A column of dicts, one object per distinct JSON text, with `take`/`to_pylist`."""

    def __init__(self, objects: list[Any], where: pa.Array) -> None:
        self.objects = objects
        self.where = where

    def take(self, positions: pa.Array) -> _Shared:
        return _Shared(self.objects, self.where.take(positions))

    def to_pylist(self) -> list[Any]:
        objects = self.objects
        return [objects[i] for i in _pylist(self.where)]


def _flat(text: str) -> dict[str, Any] | None:
    """The object of `text` when it is a flat JSON object written as orjson writes it."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if type(value) is not dict:
        return None
    for key, item in value.items():
        t = type(item)
        if type(key) is not str or (t not in _FLAT and not (t is float
                                                              and math.isfinite(item))):
            return None
    return value if orjson.dumps(value) == text.encode() else None
