"""Rows and columns for inserts, checked the same way by both adapters.

Both adapters insert columns (clickhouse-driver `columnar=True`, an Arrow table for
chdb); `insert()` of rows transposes once here, in C (`zip`), with the row-width check
that names the first bad row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from journeys.errors import WarehouseError


def transpose(table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows (each of len(columns)) as one list per column."""
    width = len(columns)
    bad = next((i for i, r in enumerate(rows) if len(r) != width), None)
    if bad is not None:
        raise WarehouseError(
            f"row {bad} for {table} has {len(rows[bad])} values, expected {width}"
        )
    return [list(c) for c in zip(*rows, strict=True)]


def row_count(table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> int:
    """The rows in column `data`, after checking there is one list per column and that
    all have that length."""
    if len(data) != len(columns):
        raise WarehouseError(
            f"{len(data)} columns of data for {table}, expected {len(columns)} ({columns})"
        )
    if not data:
        return 0
    n = len(data[0])
    bad = next((c for c, values in zip(columns, data, strict=True) if len(values) != n), None)
    if bad is not None:
        raise WarehouseError(
            f"column {bad} for {table} has {len(data[columns.index(bad)])} values, "
            f"expected {n} (the length of {columns[0]})"
        )
    return n
