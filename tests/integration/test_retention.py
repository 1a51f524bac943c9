"""Retention drops whole old months on both engines, and only those (plan, apply, CLI)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from typer.testing import CliRunner

from deploy.cli import _register
from deploy.cli import app as cli
from journeys.errors import InvalidQuery
from journeys.settings import WarehouseConfig
from tests.integration.journey_report_support import open_warehouse
from warehouse import retention
from warehouse.backend import Warehouse
from warehouse.connect import connect
from warehouse.schema import migrate
from warehouse.tables import DEAD_LETTERS, JOURNEY_INSTANCES, SESSIONS, TOUCHPOINTS, Table
from warehouse.writers_alerts import ALERTS

TIME_COLUMN = {TOUCHPOINTS: "occurred_at", SESSIONS: "started_at", DEAD_LETTERS: "received_at",
               ALERTS: "window_start", JOURNEY_INSTANCES: "opened_at"}
TODAY = date(2024, 6, 15)
# Jan and Feb end before 2024-03-17 (90 days before TODAY); Mar does not; June is current.
TIMES = [datetime(2024, 1, 31, 23, 59, 59, tzinfo=UTC), datetime(2024, 2, 10, tzinfo=UTC),
         datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 6, 14, tzinfo=UTC)]
_COUNT = iter(range(1_000_000))


def _value(kind: str) -> Any:
    if kind.startswith("Array"):
        return []
    if kind.startswith("DateTime"):
        return datetime(2024, 1, 1, tzinfo=UTC)
    if kind.startswith(("UInt", "Int")):
        return 0
    return 0.0 if kind.startswith("Float") else ""


def _fill(wh: Warehouse, table: Table) -> None:
    rows = []
    for i, t in enumerate(TIMES):
        row = {name: _value(kind) for name, kind in table.schema}
        row[TIME_COLUMN[table]] = t
        key = next(name for name, kind in table.schema if kind == "String")
        row[key] = f"row{i}"  # distinct keys: nothing collapses
        rows.append(tuple(row[c] for c in table.columns))
    wh.insert(table.name, table.columns, rows)


@pytest.fixture(params=["server", "chdb"])
def config(request: pytest.FixtureRequest, run_id: str) -> Iterator[WarehouseConfig]:
    cfg = open_warehouse(request, request.param, f"ret_{run_id}_{next(_COUNT)}")
    wh = connect(cfg)
    try:
        migrate(wh)
        for table in TIME_COLUMN:
            _fill(wh, table)
        yield cfg
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {cfg.database}")
        wh.close()


def _counts(wh: Warehouse) -> dict[str, int]:
    return {t.name: int(wh.query(f"SELECT count() FROM {wh.database}.{t.name}")[0][0])
            for t in TIME_COLUMN}


def test_plan_and_apply_drop_only_whole_old_months(config: WarehouseConfig) -> None:
    wh = connect(config)
    try:
        drops = retention.plan(wh, 90, today=TODAY)
        assert {(d.table, d.partition) for d in drops} == {
            (t.name, m) for t in TIME_COLUMN for m in (202401, 202402)}
        assert all(d.rows == 1 and d.bytes_on_disk > 0 for d in drops)
        assert retention.plan(wh, 90, today=TODAY, tables=("touchpoints",)) == [
            d for d in drops if d.table == "touchpoints"]
        assert retention.apply(wh, drops) == len(drops)
        assert _counts(wh) == {t.name: 2 for t in TIME_COLUMN}
        assert retention.plan(wh, 90, today=TODAY) == []
        retention.apply(wh, drops)  # already gone: a no-op
        assert _counts(wh) == {t.name: 2 for t in TIME_COLUMN}
        assert int(wh.query(f"SELECT count() FROM {wh.database}.schema_migrations")[0][0]) > 0
    finally:
        wh.close()


def test_bad_requests(config: WarehouseConfig) -> None:
    wh = connect(config)
    try:
        with pytest.raises(InvalidQuery, match="at least 1 day"):
            retention.plan(wh, 0)
        with pytest.raises(InvalidQuery, match="no retention"):
            retention.plan(wh, 30, tables=("schema_migrations",))
    finally:
        wh.close()


def test_cli(config: WarehouseConfig) -> None:
    _register()
    where = (["--backend", "server", "--host", config.host, "--port", str(config.port)]
             if config.backend == "server" else ["--backend", "chdb", "--path", str(config.path)])
    args = ["retention", "--database", config.database, *where]
    days = (datetime.now(UTC).date() - date(2024, 3, 1)).days  # cutoff: early March 2024
    dry = CliRunner().invoke(cli, [*args, "--older-than", str(days), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would drop 10 partition(s)" in dry.output and "touchpoints 202401" in dry.output
    wh = connect(config)
    try:
        assert _counts(wh) == {t.name: 4 for t in TIME_COLUMN}
        done = CliRunner().invoke(cli, [*args, "--older-than", str(days), "--table",
                                        "touchpoints"])
        assert done.exit_code == 0 and "dropped 2 partition(s), 2 rows" in done.output
        assert _counts(wh)["touchpoints"] == 2 and _counts(wh)["sessions"] == 4
    finally:
        wh.close()
    again = CliRunner().invoke(cli, [*args, "--older-than", str(days), "--table", "touchpoints"])
    assert again.exit_code == 0 and "nothing older than" in again.output
