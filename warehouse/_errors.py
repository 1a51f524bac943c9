"""Turning driver exceptions into journeys.errors with short, useful messages."""

from __future__ import annotations

import re

from journeys.errors import WarehouseError
from warehouse.sql import head

_CODE = re.compile(r"Code:\s*(\d+)")


class StatementError(WarehouseError):
    """ClickHouse refused a statement; `code` is its numeric error code when known."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def clean_message(text: str) -> str:
    """The server's message without the C++ stack trace and the `DB::Exception:` noise."""
    text = text.split("Stack trace", 1)[0]
    text = re.sub(r"\bDB::Exception:\s*", "", text)
    text = re.sub(r"^\s*Code:\s*\d+\.?\s*", "", text)
    text = " ".join(text.split()).rstrip(" .,") or "unknown error"
    return text if len(text) <= 600 else text[:599] + "…"


def error_code(text: str) -> int | None:
    m = _CODE.search(text)
    return int(m.group(1)) if m else None


def statement_error(
    engine: str, sql: str, message: str, code: int | None = None
) -> StatementError:
    """A WarehouseError naming the engine, the ClickHouse error code and the statement.

    The statement is shown from its template, so parameter values (customer data) do not
    end up in logs.
    """
    code = error_code(message) if code is None else code
    prefix = f"{engine} error {code}" if code is not None else f"{engine} error"
    return StatementError(f"{prefix}: {clean_message(message)} [SQL: {head(sql)}]", code)
