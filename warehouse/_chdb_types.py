"""chdb result and insert conversions, so the embedded adapter returns and accepts the
same Python values as clickhouse-driver does for the server.

Reads use JSONCompactEachRowWithNamesAndTypes (the type names drive conversion: Date ->
date, DateTime('UTC') -> aware datetime, DateTime -> naive, arrays -> lists, ...).
Inserts build an Arrow table typed from the target columns' ClickHouse types, so empty
lists, None and ints-as-epoch-seconds land exactly as with the driver.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pyarrow as pa

Converter = Callable[[Any], Any]
_NAMED = re.compile(r"^[A-Za-z_]\w*\s+(?=[A-Z])")  # `name Type` inside a named Tuple


def _inner(type_name: str, wrapper: str) -> str | None:
    prefix = wrapper + "("
    if type_name.startswith(prefix) and type_name.endswith(")"):
        return type_name[len(prefix):-1]
    return None


def _split_top(args: str) -> list[str]:
    """Split `A, B(C, D), E` at top-level commas."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(args):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(args[start:i].strip())
            start = i + 1
    parts.append(args[start:].strip())
    return parts


def _float(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _datetime(tz: ZoneInfo | None) -> Converter:
    def conv(v: Any) -> datetime:
        dt = datetime.fromisoformat(v)
        return dt.replace(tzinfo=tz) if tz is not None else dt

    return conv


@lru_cache(maxsize=256)
def converter(type_name: str) -> Converter | None:
    """A function turning one JSON value of ClickHouse type `type_name` into the value
    clickhouse-driver would return; None when the JSON value already is that value."""
    for wrapper in ("LowCardinality", "SimpleAggregateFunction"):
        inner = _inner(type_name, wrapper)
        if inner is not None:
            return converter(inner if wrapper == "LowCardinality" else _split_top(inner)[-1])
    inner = _inner(type_name, "Nullable")
    if inner is not None:
        conv = converter(inner)
        if conv is None:
            return None
        inner_conv = conv
        return lambda v: None if v is None else inner_conv(v)
    inner = _inner(type_name, "Array")
    if inner is not None:
        conv = converter(inner)
        return None if conv is None else (lambda v: [conv(x) for x in v])
    inner = _inner(type_name, "Tuple")
    if inner is not None:
        convs = [converter(_NAMED.sub("", t)) or _same for t in _split_top(inner)]
        return lambda v: tuple(c(x) for c, x in zip(convs, v, strict=True))
    if type_name.startswith(("Int", "UInt")):
        # <= 64 bits arrive as JSON numbers (output_format_json_quote_64bit_integers=0)
        return int if type_name.endswith(("128", "256")) else None
    if type_name.startswith("Float"):
        return _float
    if type_name.startswith("Decimal"):
        return lambda v: Decimal(str(v))
    if type_name in ("Date", "Date32"):
        return date.fromisoformat
    if type_name == "DateTime" or type_name.startswith("DateTime("):
        tz_arg = _inner(type_name, "DateTime")
        return _datetime(ZoneInfo(tz_arg.strip("'")) if tz_arg else None)
    return None


def _same(v: Any) -> Any:
    return v


def parse_rows(payload: bytes) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and converted rows from JSONCompactEachRowWithNamesAndTypes output."""
    lines = payload.splitlines()
    if len(lines) < 2:
        return [], []
    names = orjson.loads(lines[0])
    convs = [(i, c) for i, t in enumerate(orjson.loads(lines[1])) if (c := converter(t))]
    data = orjson.loads(b"[" + b",".join(line for line in lines[2:] if line) + b"]")
    if convs:
        for values in data:
            for i, conv in convs:
                values[i] = conv(values[i])
    return names, [tuple(values) for values in data]


_ARROW_SCALARS: dict[str, pa.DataType] = {
    "String": pa.string(), "FixedString": pa.string(), "UUID": pa.string(),
    "UInt8": pa.uint8(), "UInt16": pa.uint16(), "UInt32": pa.uint32(), "UInt64": pa.uint64(),
    "Int8": pa.int8(), "Int16": pa.int16(), "Int32": pa.int32(), "Int64": pa.int64(),
    "Float32": pa.float32(), "Float64": pa.float64(), "Bool": pa.bool_(),
    "Date": pa.date32(), "Date32": pa.date32(),
}


@lru_cache(maxsize=256)
def arrow_type(type_name: str) -> pa.DataType | None:
    """The Arrow type to send for a ClickHouse column type; None lets Arrow infer."""
    for wrapper in ("Nullable", "LowCardinality"):
        inner = _inner(type_name, wrapper)
        if inner is not None:
            return arrow_type(inner)
    inner = _inner(type_name, "Array")
    if inner is not None:
        item = arrow_type(inner)
        return pa.list_(item) if item is not None else None
    if type_name == "DateTime" or type_name.startswith("DateTime("):
        return pa.timestamp("s", tz="UTC")  # ints are epoch seconds, naive = UTC
    return _ARROW_SCALARS.get(type_name)


def arrow_column(values: Sequence[Any], dtype: pa.DataType | None) -> pa.Array:
    """One column as Arrow; bools in integer columns become 0/1 (Arrow refuses them)."""
    try:
        return pa.array(values, type=dtype)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        if dtype is None or not pa.types.is_integer(dtype):
            raise
        return pa.array([int(v) if type(v) is bool else v for v in values], type=dtype)


def arrow_stream(
    columns: Sequence[str], types: Sequence[pa.DataType | None], data: Sequence[Sequence[Any]]
) -> bytes:
    """Columns (`data[i]` the values of `columns[i]`, all of one length) as one Arrow
    IPC stream, what send_insert("ArrowStream") reads."""
    arrays = [arrow_column(values, t) for values, t in zip(data, types, strict=True)]
    table = pa.table(arrays, names=list(columns))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()
