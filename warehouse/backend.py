"""The warehouse port. Adapters: warehouse.server (clickhouse-driver), warehouse.embedded (chdb).

Blocking by design (both drivers are); async callers run these in a thread.
SQL uses clickhouse-driver's `%(name)s` client-side parameters on both backends, so one
SQL text serves both; identifiers never come from parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import pandas as pd

Params = Mapping[str, Any] | None


@runtime_checkable
class Warehouse(Protocol):
    """What every stage may ask of ClickHouse."""

    database: str

    def execute(self, sql: str, params: Params = None) -> None:
        """Run a statement that returns nothing (DDL, ALTER, INSERT ... SELECT).

        Inline `INSERT ... VALUES` is refused (it hangs ClickHouse 18.16): use insert().
        """

    def query(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        """Rows as tuples."""

    def query_df(self, sql: str, params: Params = None) -> pd.DataFrame:
        """Rows as a DataFrame with the query's column names."""

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """Insert rows into `database.table` (bare table name; a batch, never per event).

        Rows hold plain Python values in `columns` order (DateTime columns take epoch
        seconds or datetimes, naive = UTC). Returns rows written; empty is a no-op.
        """

    def insert_columns(self, table: str, columns: Sequence[str],
                       data: Sequence[list[Any]]) -> int:
        """insert() for data already in columns: `data[i]` holds every row's value of
        `columns[i]`, all of one length (the writers build these straight from their
        inputs: no row tuples, no transposing in the driver). The lists may be
        converted in place by the driver. Returns rows written; empty is a no-op.
        """

    def ping(self) -> bool:
        """True when the backend answers a trivial query."""

    def close(self) -> None:
        """Release connections/sessions."""
