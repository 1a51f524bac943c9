"""Compaction on both engines: settled months are read without FINAL, the others with it,
and the numbers never change — whatever mix of months is compacted (plus the CLI)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from typer.testing import CliRunner

from deploy.cli import _register
from deploy.cli import app as cli
from journeys.definitions import load_definitions
from journeys.settings import WarehouseConfig
from tests.integration.journey_report_support import open_warehouse
from warehouse import compaction, rollups
from warehouse.backend import Warehouse
from warehouse.connect import connect
from warehouse.queries import _settled, abandonment, customer_journeys, funnel
from warehouse.schema import migrate
from warehouse.tables import JOURNEY_INSTANCES
from warehouse.writers_journeys import journey_retraction_row, write_journey_instances

D = load_definitions().get("purchase")
JAN, FEB = 1_704_153_600_000, 1_706_832_000_000  # 2024-01-02, 2024-02-02
RANGE = {"date_from": date(2024, 1, 1), "date_to": date(2024, 2, 29)}
_COUNT = iter(range(1_000_000))


def _instance(i: int, opened: int, furthest: int, version: int) -> dict[str, Any]:
    status = "converted" if furthest == 5 else "abandoned"
    steps = list(D.steps[: furthest + 1])
    return {"instance_id": f"i{opened}-{i}", "journey": "purchase", "customer_id": f"c{i % 7}",
            "status": status, "opened_at_ms": opened + i * 1000,
            "closed_at_ms": opened + i * 1000 + 60_000, "furthest_step": furthest,
            "furthest_step_name": steps[-1], "path_types": steps,
            "path_channels": ["web"] * len(steps),
            "path_times": [opened + i * 1000 + k for k in range(len(steps))],
            "version": version, "entry_context": {"country": "DE" if i % 2 else "FR"},
            "definition_version": D.version}


@pytest.fixture(params=["server", "chdb"])
def wh(request: pytest.FixtureRequest, run_id: str) -> Iterator[Warehouse]:
    config = open_warehouse(request, request.param, f"cmp_{run_id}_{next(_COUNT)}")
    w = connect(config)
    try:
        migrate(w)
        for month in (JAN, FEB):  # each instance: a stale version, then the final one twice
            write_journey_instances(w, [_instance(i, month, 0, 1) for i in range(40)])
            final = [_instance(i, month, i % 6, 2) for i in range(40)]
            write_journey_instances(w, final)
            write_journey_instances(w, final)
        w.config = config  # type: ignore[attr-defined]
        yield w
    finally:
        w.execute(f"DROP DATABASE IF EXISTS {config.database}")
        w.close()


def _reports(wh: Warehouse) -> tuple[Any, ...]:
    return (funnel.run(wh, D, breakdown=["context.country"], **RANGE),
            abandonment.run(wh, D, breakdown=["day", "step"], **RANGE),
            customer_journeys.run(wh, "c3", limit=500),
            funnel.run(wh, D, **RANGE),  # these two read rollups where they exist
            abandonment.run(wh, D, breakdown=["step", "channel"], **RANGE))


def _months(wh: Warehouse) -> tuple[tuple[int, ...], ...]:
    s = _settled.split_months(wh, **RANGE)[0]
    return s.settled, s.dirty, s.rolled


def test_any_mix_of_settled_months_gives_the_same_numbers(wh: Warehouse) -> None:
    dirty = _reports(wh)
    totals = dirty[0][1]
    assert totals.opened == 80 and totals.converted == 12  # i % 6 == 5: 6 a month
    assert _settled.split_months(wh, **RANGE)[0] == _settled.Split(dirty=(202401, 202402))
    assert [p.partition for p in compaction.unsettled(wh)] == [202401, 202402]
    compaction.compact(wh, [p for p in compaction.unsettled(wh) if p.partition == 202401])
    assert _months(wh) == ((202401,), (202402,), (202401,))  # settled and rolled up
    assert _reports(wh) == dirty
    assert [p.partition for p in compaction.compact(wh)] == [202402]
    assert _months(wh) == ((202401, 202402), (), (202401, 202402))
    assert compaction.unsettled(wh) == []
    assert _reports(wh) == dirty
    write_journey_instances(wh, [_instance(3, FEB, 5, 3)])  # a later version lands: FINAL again
    assert _months(wh) == ((202401,), (202402,), (202401,))
    later = _reports(wh)
    assert later[3][1].converted == dirty[3][1].converted + 1
    assert later[0][1] == later[3][1]  # rollup + FINAL month = FINAL/plain reads
    retracted = _instance(9, JAN, 0, 0)  # a tombstone in a rolled-up month
    wh.insert(JOURNEY_INSTANCES.name, JOURNEY_INSTANCES.columns, [journey_retraction_row(
        retracted["instance_id"], "purchase", "c2", retracted["opened_at_ms"], 9, D.version)])
    assert _months(wh) == ((), (202401, 202402), ())
    gone = _reports(wh)
    assert gone[3][1].opened == later[3][1].opened - 1
    compaction.compact(wh)
    assert _months(wh) == ((202401, 202402), (), (202401, 202402))
    assert _reports(wh) == gone
    assert rollups.roll_up(wh) == []  # idempotent: every settled part has its rollup


def test_cli(wh: Warehouse) -> None:
    _register()
    config: WarehouseConfig = wh.config  # type: ignore[attr-defined]
    where = (["--backend", "server", "--host", config.host, "--port", str(config.port)]
             if config.backend == "server" else ["--backend", "chdb", "--path", str(config.path)])
    args = ["compact", "--database", config.database, *where]
    dry = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert dry.exit_code == 0 and "would compact 2 partition(s)" in dry.output, dry.output
    assert "journey_instances 202401: 3 part(s), 120 rows" in dry.output
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0 and "compacted 2 partition(s)" in done.output
    assert compaction.unsettled(wh) == []
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "compacted 0 partition(s)" in again.output


def test_a_database_without_rollups_reads_instances(wh: Warehouse) -> None:
    """Reports keep working on a database not yet migrated to 0006."""
    expected = _reports(wh)
    compaction.compact(wh)
    wh.execute(f"DROP TABLE {wh.database}.journey_rollups")
    assert _months(wh) == ((202401, 202402), (), ())
    assert _reports(wh) == expected
