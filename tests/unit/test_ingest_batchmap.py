"""The fused path of ingest.batchmap against the row path it shortcuts: for any rows,
malformed ones included, the same events (equal touchpoints and the same JSON bytes),
the same rejections (reason, original bytes, event id) and the same row numbers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.batchmap import ChunkMapper, Mapped
from ingest.generator import GeneratorConfig, generate_events
from ingest.importer import ImportOptions
from ingest.mapping import ColumnMapping, RowMapper, row_bytes
from ingest.readers import READERS, Chunk, columns
from ingest.writers import write_events
from journeys.events import DEFAULT_CHANNELS, EventValidator, Rejection
from journeys.timeutil import ms_to_iso
from tests.profiles import MULTIPLIER

V = EventValidator()
MAPPINGS = [
    ColumnMapping(),
    ColumnMapping(time_unit="s", extra_columns="ignore"),
    ColumnMapping(type=None, constant_type="purchase", channel=None, constant_channel="store",
                  constant_source="pos", timezone="Europe/Berlin"),
    ColumnMapping(event_id="txn", customer_id="card", occurred_at="ts", source=None),
    ColumnMapping(channel=None, constant_channel="fax"),  # not a known channel
    ColumnMapping(type=None, constant_type=" "),  # blank constant
    ColumnMapping(event_id=None),  # ids derived from the row
    ColumnMapping(time_format="%Y-%m-%dT%H:%M:%S.%fZ"),
]


def reference(chunk: Chunk, mapper: RowMapper, validator: EventValidator) -> Mapped:
    """The row path as `ingest.importer.map_chunk` ran it before the fused path."""
    out = Mapped()
    for record, raw, row in zip(chunk.records, chunk.raws, chunk.rows, strict=True):
        if isinstance(record, str):
            out.bad.append(Rejection(record, raw or b""))
            out.bad_rows.append(row)
            continue
        wire = mapper.map(record)
        eid = record.get("event_id") if isinstance(record.get("event_id"), str) else None
        result = (Rejection(wire, b"", eid) if isinstance(wire, str)
                  else validator.validate(wire, b""))
        if isinstance(result, Rejection):
            original = raw if raw is not None else row_bytes(record)
            out.bad.append(Rejection(result.reason, original, result.event_id))
            out.bad_rows.append(row)
        else:
            out.good.append(result)
            out.values.append(result.to_json())
            out.good_rows.append(row)
    return out


def assert_same(chunk: Chunk, mapping: ColumnMapping, cols: list[str] | None = None) -> Mapped:
    mapper = RowMapper(mapping, cols)
    got = ChunkMapper(mapper, V).map(chunk)
    want = reference(chunk, RowMapper(mapping, cols), V)
    assert got.good_rows == want.good_rows
    assert got.values == want.values
    assert got.good == want.good
    assert got.bad_rows == want.bad_rows
    assert got.bad == want.bad
    return got


# -- generated rows ------------------------------------------------------------------

def _text(limit: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(["a", "x-1", " padded ", "", "   ", "\t\n", "é", "²"]),
        st.integers(limit - 2, limit + 2).map(lambda n: "c" * n),
        st.integers(limit - 1, limit + 1).map(lambda n: " " + "c" * n + " "),
        st.text(max_size=8),
        st.none(), st.integers(-5, 5), st.booleans(), st.just(math.nan), st.just(1.0))


def _times() -> st.SearchStrategy[Any]:
    canonical = st.builds(
        lambda y, mo, d, h, mi, s, ms: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:"
                                       f"{s:02d}.{ms:03d}Z",
        st.sampled_from([1969, 1999, 2000, 2026, 2099, 2100, 2400]), st.integers(0, 13),
        st.integers(0, 32), st.integers(0, 24), st.integers(0, 60), st.integers(0, 60),
        st.integers(0, 999))
    return st.one_of(
        canonical, canonical.map(lambda t: t.lower()), canonical.map(lambda t: f" {t} "),
        canonical.map(lambda t: t.replace("Z", "+02:00")), canonical.map(lambda t: t[:19]),
        st.integers(-10**16, 10**16).map(str), st.integers(0, 5_000_000_000_000),
        st.integers(900_000_000, 4_200_000_000), st.integers(900_000_000, 4_200_000_000).map(str),
        st.sampled_from(["2026-03-01T10:00:00Z", "1772359200.5", "²", "", "  ", "-1",
                         "2026-02-30T00:00:00.000Z", "2026-03-01 10:00:00"]),
        st.floats(allow_nan=True), st.none(), st.booleans())


_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6))
_OBJECT = st.dictionaries(st.text(max_size=5), _SCALAR, max_size=4)
_NESTED = st.recursive(_OBJECT, lambda inner: st.dictionaries(
    st.text(max_size=3), st.one_of(inner, st.lists(inner, max_size=2)), max_size=2),
    max_leaves=40)


def _objects() -> st.SearchStrategy[Any]:
    import orjson

    big = st.integers(8_000, 33_000).map(lambda n: {"blob": "b" * n})
    return st.one_of(
        _OBJECT, _NESTED, big, _OBJECT.map(lambda d: orjson.dumps(
            {k: v for k, v in d.items() if not (isinstance(v, float) and not math.isfinite(v))}
        ).decode()),
        st.sampled_from(["", "{", "[1]", "null", "{}", '{"a":{"b":1}}', "   "]),
        st.lists(st.integers(-9, 9), max_size=2), st.none(), st.integers(-2**63, 2**63 - 1),
        st.just([("k", "v")]), st.just(math.nan))


def _fields() -> dict[str, st.SearchStrategy[Any]]:
    return {
        "event_id": _text(128), "txn": _text(128), "type": _text(64),
        "channel": st.one_of(st.sampled_from([*DEFAULT_CHANNELS, " web ", "fax", "WEB"]),
                             _text(32)),
        "occurred_at": _times(), "ts": _times(),
        "customer_id": _text(128), "card": _text(128), "anonymous_id": _text(128),
        "source": _text(64), "properties": _objects(), "context": _objects(),
        "extra": _SCALAR, "context.x": _SCALAR, "properties.y": _SCALAR,
    }


def _rows() -> st.SearchStrategy[dict[str, Any]]:
    fields = _fields()
    common = {"event_id", "type", "channel", "occurred_at", "customer_id", "anonymous_id",
              "source", "properties", "context", "txn", "card", "ts"}
    return st.fixed_dictionaries({}, optional=fields) | st.fixed_dictionaries(
        {k: v for k, v in fields.items() if k in common})


def _near_valid() -> st.SearchStrategy[dict[str, Any]]:
    """Valid rows (values at and inside every limit), with at most one field replaced by
    anything: most random rows fail several rules, these reach the fused path's edges."""
    ok_time = st.one_of(
        st.integers(946_684_800_000, 4_102_444_799_999),
        st.integers(946_684_800_000, 4_102_444_799_999).map(str),
        st.integers(946_684_800_000, 4_102_444_799_999).map(
            ms_to_iso))
    flat = _OBJECT.filter(lambda d: all(not isinstance(v, float) or math.isfinite(v)
                                        for v in d.values()))
    import orjson

    base = st.fixed_dictionaries({
        "event_id": st.sampled_from(["e1", " e2 ", "e" * 128, " " + "e" * 128 + " "]),
        "type": st.sampled_from(["view", "t" * 64, " t "]),
        "channel": st.sampled_from([*DEFAULT_CHANNELS, " web "]),
        "occurred_at": ok_time,
        "customer_id": st.sampled_from(["c1", " c ", "c" * 128, "", None, "  "]),
        "anonymous_id": st.sampled_from(["a1", "a" * 128, None, "", " "]),
        "source": st.sampled_from(["s", "s" * 64, " s ", "", "  ", None]),
        "properties": st.one_of(flat, flat.map(lambda d: orjson.dumps(d).decode()),
                                st.sampled_from(["", None, "{}"])),
        "context": st.one_of(flat, flat.map(lambda d: orjson.dumps(d).decode()), st.none()),
    })
    fields = _fields()
    one = st.one_of(st.just({}), st.sampled_from(sorted(fields)).flatmap(
        lambda k: fields[k].map(lambda v: {k: v})))
    return st.builds(lambda b, o: {**b, **o}, base, one)


_RECORDS = st.one_of(_rows(), _near_valid(), _near_valid(), st.sampled_from(
    ["invalid_json: unexpected character", "not_an_object: got list"]))


@settings(max_examples=200 * MULTIPLIER)
@given(st.lists(st.tuples(_RECORDS, st.sampled_from([None, b'{"line": 1}'])), max_size=8),
       st.sampled_from(MAPPINGS))
def test_fused_path_matches_the_row_path(items: list[tuple[Any, bytes | None]],
                                         mapping: ColumnMapping) -> None:
    chunk = Chunk([r for r, _ in items], [raw for _, raw in items],
                  list(range(1, len(items) + 1)), 0, None)
    assert_same(chunk, mapping)


@settings(max_examples=60 * MULTIPLIER)
@given(st.lists(st.one_of(_rows(), _near_valid()), min_size=1, max_size=6))
def test_file_columns_change_nothing(rows: list[dict[str, Any]]) -> None:
    """With a file's header known (CSV/Parquet), ids may be derived: still the same."""
    cols = sorted({k for r in rows for k in r} | {"occurred_at", "type", "channel",
                                                   "customer_id"})
    chunk = Chunk(list(rows), [None] * len(rows), list(range(1, len(rows) + 1)), 0, None)
    assert_same(chunk, ColumnMapping(), cols)


def test_valid_rows_take_the_fused_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The common shapes are fused (else the property above would test nothing)."""
    rows = [{"event_id": "e1", "type": "view", "channel": "web",
             "occurred_at": "2026-03-01T10:00:00.250Z", "customer_id": " c1 ",
             "anonymous_id": "", "source": "  ", "properties": '{"a": 1.5, "b": null}',
             "context": {}},
            {"event_id": "e2", "type": "view", "channel": "app",
             "occurred_at": 1772359200250, "anonymous_id": "a1", "properties": None},
            {"event_id": "e3", "type": "view", "channel": "app",
             "occurred_at": "1772359200250", "anonymous_id": "a1"}]
    chunk = Chunk(rows, [None] * 3, [1, 2, 3], 0, None)
    mapper = ChunkMapper(RowMapper(ColumnMapping()), V)
    monkeypatch.setattr(mapper, "_row_path", lambda *a: pytest.fail(f"row path for {a}"))
    out = mapper.map(chunk)
    assert [tp.event_id for tp in out.good] == ["e1", "e2", "e3"]
    monkeypatch.undo()
    assert_same(chunk, ColumnMapping())


# -- whole files, every format -------------------------------------------------------

def _file_events() -> list[dict[str, Any]]:
    events = list(generate_events(GeneratorConfig(seed=3, max_events=400)))
    for i, e in enumerate(events[::7]):  # spoil some rows, one way each
        spoil = i % 6
        if spoil == 0:
            e["channel"] = "fax"
        elif spoil == 1:
            e["occurred_at"] = "yesterday"
        elif spoil == 2:
            e["type"] = "  "
        elif spoil == 3:
            e["customer_id"] = e["anonymous_id"] = None
        elif spoil == 4:
            e["properties"] = {"deep": {"er": [1, {"x": 2}]}}
        else:
            e["occurred_at"] = 1_000
    return events


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_files_in_every_format(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"ev.{fmt}"
    write_events(_file_events(), path)
    if fmt == "jsonl":
        with path.open("ab") as f:
            f.write(b'{"broken": \n[1, 2]\n')
    opts = ImportOptions(chunk_rows=50)
    cols = columns(path, fmt, opts)  # type: ignore[arg-type]
    rejected = accepted = 0
    for chunk in READERS[fmt](path, opts):  # type: ignore[index]
        out = assert_same(chunk, ColumnMapping(), cols)
        rejected += len(out.bad)
        accepted += len(out.good)
    assert accepted > 300 and rejected >= 40


# -- Arrow chunks (CSV, Parquet): the columnar path ------------------------------------

_COLUMNS = ["event_id", "type", "channel", "occurred_at", "customer_id", "anonymous_id",
            "source", "properties", "context"]


def _texts(limit: int, good: list[str]) -> st.SearchStrategy[str | None]:
    """Text cells as a CSV/Parquet file holds them, at every edge."""
    return st.one_of(
        st.sampled_from(good), st.sampled_from(["", " ", " a", "a ", "a\tb", 'q"t', "b\\s",
                                                "é", "\x7f", "a b", "\u00a0x", None]),
        st.integers(limit - 1, limit + 1).map(lambda n: "c" * n),
        st.integers(limit - 1, limit + 1).map(lambda n: " " + "c" * n), st.text(max_size=6))


def _json_texts() -> st.SearchStrategy[str | None]:
    import orjson

    flat = _OBJECT.filter(lambda d: all(not isinstance(v, float) or math.isfinite(v)
                                        for v in d.values()))
    return st.one_of(
        flat.map(lambda d: orjson.dumps(d).decode()),
        flat.map(lambda d: orjson.dumps(d).decode().replace(":", ": ")),  # not canonical
        _NESTED.map(lambda d: orjson.dumps(d, default=str).decode()),
        st.sampled_from(["", None, "{}", "{", "[1]", "null", '{"a":1,"a":2}', '{"f":1e2}',
                         '{"f":1.5}', '{"a":"x"}', " {} ", '{"b":' + '"z"' * 0 + '"' +
                         "y" * 9000 + '"}', '{"n":18446744073709551616}']))


def _time_texts() -> st.SearchStrategy[str | None]:
    return st.one_of(_times().map(lambda t: t if t is None or isinstance(t, str) else str(t)),
                     st.integers(946_684_800_000, 4_102_444_799_999).map(ms_to_iso))


def _table_rows(columns: list[str]) -> st.SearchStrategy[list[dict[str, Any]]]:
    cells = {
        "event_id": _texts(128, ["e1", "e-2", "e" * 128]),
        "type": _texts(64, ["view", "t" * 64]),
        "channel": _texts(32, [*DEFAULT_CHANNELS, "fax"]),
        "occurred_at": _time_texts(), "customer_id": _texts(128, ["c1", "c" * 128]),
        "anonymous_id": _texts(128, ["a1", "a" * 128]), "source": _texts(64, ["s", "pos"]),
        "properties": _json_texts(), "context": _json_texts(), "extra": _texts(8, ["x"]),
    }
    fine = {
        "event_id": st.sampled_from(["e1", "e-2", "e" * 128]),
        "type": st.sampled_from(["view", "t" * 64]), "channel": st.sampled_from(DEFAULT_CHANNELS),
        "occurred_at": st.integers(946_684_800_000, 4_102_444_799_999).map(ms_to_iso),
        "customer_id": st.sampled_from(["c1", "c" * 128, "", None]),
        "anonymous_id": st.sampled_from(["a1", "a" * 128]),
        "source": st.sampled_from(["s", "s" * 64, "", None]),
        "properties": st.sampled_from(['{"a":1}', "{}", "", None, '{"f":1.5,"s":"x y"}']),
        "context": st.sampled_from(['{"d":"m"}', "", None]), "extra": st.sampled_from([""]),
    }
    # valid rows with at most two cells replaced by anything: most random rows fail
    # several checks, these reach each check's edge alone
    spoiled = st.builds(lambda row, bad: {**row, **bad},
                        st.fixed_dictionaries({c: fine[c] for c in columns}),
                        st.dictionaries(st.sampled_from(columns),
                                        st.just(None), max_size=2).flatmap(
                            lambda keys: st.fixed_dictionaries({k: cells[k] for k in keys})))
    return st.lists(st.one_of(spoiled, spoiled, st.fixed_dictionaries(
        {c: cells[c] for c in columns})), min_size=0, max_size=8)


@st.composite
def _tables(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[str], ColumnMapping]:
    mapping = draw(st.sampled_from(MAPPINGS[:6]))
    needed = {"occurred_at", "event_id"} | ({"type"} if mapping.constant_type is None
                                            else set()) | (
        {"channel"} if mapping.constant_channel is None else set())
    optional = draw(st.sets(st.sampled_from(["customer_id", "anonymous_id", "source",
                                             "properties", "context", "extra"])))
    optional.add(draw(st.sampled_from(["customer_id", "anonymous_id"])))  # the file needs one
    columns = [c for c in [*_COLUMNS, "extra"] if c in needed | optional]
    if mapping.customer_id == "card":  # the renamed columns' mapping: rename them
        mapping = ColumnMapping()
    return draw(_table_rows(columns)), columns, mapping


def _arrow_chunk(rows: list[dict[str, Any]], columns: list[str]) -> Chunk:
    import pyarrow as pa

    table = pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in columns]))
    return Chunk(None, [None] * len(rows), list(range(1, len(rows) + 1)), 0, None, table=table)


@settings(max_examples=200 * MULTIPLIER)
@given(_tables())
def test_columnar_path_matches_the_row_path(case: tuple[list[dict[str, Any]], list[str],
                                                        ColumnMapping]) -> None:
    """Arrow chunks of text columns, bad cells included: the same events, bytes,
    rejections and row numbers as the row path over the same rows as dicts."""
    rows, columns, mapping = case
    assert_same(_arrow_chunk(rows, columns), mapping, columns)


def test_valid_arrow_rows_take_the_columnar_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain rows never reach the per-row paths (else the property above tests little)."""
    rows = [{"event_id": f"e{i}", "type": "view", "channel": "web",
             "occurred_at": ms_to_iso(1_772_359_200_250 + i), "customer_id": "c1" if i else "",
             "anonymous_id": "a1" if i % 2 else (None if i else "a0"), "source": None if i else "pos",
             "properties": '{"a":1.5,"b":null}' if i else "", "context": "{}"}
            for i in range(5)]
    chunk = _arrow_chunk(rows, _COLUMNS)
    mapper = ChunkMapper(RowMapper(ColumnMapping(), _COLUMNS), V)
    monkeypatch.setattr(mapper, "_map_rows", lambda *a: pytest.fail(f"row path for {a}"))
    out = mapper.map(chunk)
    assert [tp.event_id for tp in out.good] == [f"e{i}" for i in range(5)]
    monkeypatch.undo()
    assert_same(chunk, ColumnMapping(), _COLUMNS)


def test_an_empty_arrow_chunk_maps_to_nothing() -> None:
    """A header-only CSV gives a chunk of no rows (Arrow infers no type for [])."""
    for cols in (_COLUMNS, _COLUMNS[:5]):  # with and without the object columns
        out = assert_same(_arrow_chunk([], cols), ColumnMapping(), cols)
        assert not out.good and not out.bad
