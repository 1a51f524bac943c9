"""Warehouse adapter for a ClickHouse server over the native protocol (clickhouse-driver).

SQL is rendered client-side by warehouse.sql (the same text chdb gets) and sent without
driver parameters. Inserts send data blocks (`INSERT ... VALUES` plus columns,
`columnar=True`), never inline VALUES text and never zero rows: both hang ClickHouse
18.16.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pandas as pd
from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from journeys.errors import ServiceUnavailable, WarehouseError
from warehouse._columns import row_count, transpose
from warehouse._errors import clean_message, statement_error
from warehouse._pool import Pool
from warehouse.backend import Params
from warehouse.sql import check_identifier, head, insert_statement, is_inline_insert, render

ENGINE = "ClickHouse server"
# Settings sent with every query: generous text size for client-rendered IN lists.
DEFAULT_SETTINGS: Mapping[str, Any] = {"max_query_size": 16 * 1024 * 1024}
# OSError covers refused/reset connections and socket timeouts.
_UNREACHABLE = (ch_errors.NetworkError, ch_errors.SocketTimeoutError, EOFError, OSError)


class ServerWarehouse:
    """A ClickHouse server (18.16 or newer). Thread-safe: a pool of driver clients."""

    backend = "server"

    def __init__(
        self,
        *,
        database: str,
        host: str = "127.0.0.1",
        port: int = 9000,
        user: str = "default",
        password: str = "",
        connect_timeout_s: float = 5.0,
        timeout_s: float = 300.0,
        pool_size: int = 4,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.database = check_identifier(database)
        self.host, self.port = host, port
        self._client_kwargs: dict[str, Any] = dict(
            host=host, port=port, user=user, password=password, database="default",
            connect_timeout=connect_timeout_s, send_receive_timeout=timeout_s,
            sync_request_timeout=connect_timeout_s, client_name="journeys",
            settings={**DEFAULT_SETTINGS, **(settings or {})},
        )
        self._pool: Pool[Client] = Pool(self._new_client, Client.disconnect, pool_size)

    def __repr__(self) -> str:
        return f"ServerWarehouse({self.host}:{self.port}, database={self.database!r})"

    def _new_client(self) -> Client:
        return Client(**self._client_kwargs)

    @contextmanager
    def _client(self, sql: str) -> Iterator[Client]:
        """Borrow a client; translate driver failures into journeys.errors."""
        try:
            with self._pool.connection() as client:
                yield client
        except ch_errors.ServerException as exc:
            raise statement_error(ENGINE, sql, exc.message, exc.code) from None
        except _UNREACHABLE as exc:
            raise ServiceUnavailable(
                f"ClickHouse server at {self.host}:{self.port} is unreachable: "
                f"{clean_message(str(exc)) or type(exc).__name__}"
            ) from exc
        except ch_errors.Error as exc:
            raise statement_error(ENGINE, sql, str(exc)) from exc
        except RuntimeError:
            if self._pool.closed:
                raise WarehouseError(f"{self!r} is closed") from None
            raise

    def _render(self, sql: str, params: Params) -> str:
        if is_inline_insert(sql):
            raise WarehouseError(
                f"inline INSERT ... VALUES/FORMAT is not allowed (it hangs ClickHouse 18.16); "
                f"use Warehouse.insert() [SQL: {head(sql)}]"
            )
        return render(sql, params)

    def execute(self, sql: str, params: Params = None) -> None:
        text = self._render(sql, params)
        with self._client(sql) as client:
            client.execute(text)

    def query(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        text = self._render(sql, params)
        with self._client(sql) as client:
            rows = client.execute(text)
        return [tuple(r) for r in rows]

    def query_df(self, sql: str, params: Params = None) -> pd.DataFrame:
        text = self._render(sql, params)
        with self._client(sql) as client:
            data, types = client.execute(text, columnar=True, with_column_types=True)
        names = [name for name, _ in types]
        columns = data or [[] for _ in names]  # no rows: the driver returns no columns
        return pd.DataFrame({n: list(c) for n, c in zip(names, columns, strict=True)},
                            columns=names)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        if not rows:  # an INSERT without data blocks hangs 18.16: nothing to do
            return 0
        return self.insert_columns(table, columns, transpose(table, columns, rows))

    def insert_columns(self, table: str, columns: Sequence[str],
                       data: Sequence[list[Any]]) -> int:
        """One `INSERT ... VALUES` with the data as column blocks (`columnar=True`)."""
        if not row_count(table, columns, data):  # no data blocks hangs 18.16
            return 0
        head_sql = insert_statement(self.database, table, tuple(columns))
        with self._client(head_sql) as client:
            try:
                return int(client.execute(head_sql + " VALUES", data, columnar=True) or 0)
            except (struct.error, TypeError, ValueError, AttributeError, OverflowError) as exc:
                raise WarehouseError(
                    f"cannot encode rows for {self.database}.{table}: {exc}"
                ) from exc

    def ping(self) -> bool:
        try:
            return self.query("SELECT 1") == [(1,)]
        except (WarehouseError, ServiceUnavailable):
            return False

    def server_version(self) -> str:
        return str(self.query("SELECT version()")[0][0])

    def close(self) -> None:
        self._pool.close()
