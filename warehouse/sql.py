"""The one SQL dialect: identifier checks and client-side parameter rendering.

Both backends receive the same, fully rendered SQL text. Values are escaped with
clickhouse-driver's own client-side escaping (`%(name)s` placeholders), which produces
literals that ClickHouse 18.16 and chdb (26.x) parse alike; identifiers never come from
parameters, only from validated names (table constants, the configured database).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from clickhouse_driver.util.escape import escape_param

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

# An INSERT whose data would follow the statement (VALUES/FORMAT): sent without data
# blocks, ClickHouse 18.16 waits for them forever (and a later DROP of the table blocks).
_INLINE_INSERT = re.compile(
    r"^\s*INSERT\s+INTO\s+[\w.`\"]+\s*(\([^)]*\))?\s*(VALUES|FORMAT)\b", re.IGNORECASE
)


class _UtcContext:
    """Stands in for clickhouse-driver's connection context: datetimes render in UTC."""

    class server_info:  # mirrors the driver's attribute name
        @staticmethod
        def get_timezone() -> str:
            return "UTC"


_CONTEXT = _UtcContext()
_SCALARS = (str, int, float, Decimal, date, time, UUID, Enum)


def check_identifier(name: str) -> str:
    """Return `name` if it is a plain identifier (letters, digits, _), else raise ValueError."""
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise ValueError(f"not a valid identifier: {name!r}")
    return name


def qualified(database: str, table: str) -> str:
    """`database.table`, both checked; the only way table names enter SQL text."""
    return f"{check_identifier(database)}.{check_identifier(table)}"


def column_list(columns: tuple[str, ...] | list[str]) -> str:
    """`a, b, c` from checked identifiers."""
    if not columns:
        raise ValueError("an empty column list")
    return ", ".join(check_identifier(c) for c in columns)


def escape_value(value: Any) -> str:
    """One Python value as a ClickHouse literal (driver escaping, with safe extras).

    bool renders as 1/0 (18.16 has no true/false), aware datetimes are converted to UTC
    and naive ones are taken as UTC, lists and tuples render as `(..)` so `IN %(x)s`
    works on 18.16. Types without a faithful literal raise TypeError rather than being
    pasted into SQL with repr().
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, datetime) and value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, list | tuple | set | frozenset):
        if not value:
            raise ValueError("an empty collection has no ClickHouse literal; handle it in SQL")
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return "(" + ", ".join(escape_value(v) for v in items) + ")"
    if isinstance(value, _SCALARS):
        return str(escape_param(value, _CONTEXT))
    raise TypeError(f"unsupported SQL parameter type: {type(value).__name__}")


def render(sql: str, params: Mapping[str, Any] | None = None) -> str:
    """Substitute `%(name)s` placeholders client-side, exactly as clickhouse-driver does.

    Without params the text is returned unchanged (a literal `%` needs no escaping);
    with params, a literal `%` must be written `%%`.
    """
    if params is None:
        return sql
    if not isinstance(params, Mapping):
        raise TypeError("parameters must be a mapping of name -> value")
    try:
        return sql % {k: escape_value(v) for k, v in params.items()}
    except KeyError as exc:
        raise KeyError(f"SQL parameter {exc.args[0]!r} is not given") from None


def is_inline_insert(sql: str) -> bool:
    """True for `INSERT INTO t [(cols)] VALUES|FORMAT ...`: must go through insert()."""
    return bool(_INLINE_INSERT.match(sql))


def insert_statement(database: str, table: str, columns: tuple[str, ...] | list[str]) -> str:
    """`INSERT INTO db.t (a, b)`: the head both adapters complete their own way."""
    return f"INSERT INTO {qualified(database, table)} ({column_list(columns)})"


def head(sql: str, limit: int = 160) -> str:
    """The start of a statement on one line, for error messages (no parameter values)."""
    one_line = " ".join(sql.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"
