"""The alerts table, writer and query on BOTH engines (ClickHouse 18.16 server and chdb)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from journeys.definitions import load_definitions
from journeys.errors import InvalidQuery
from journeys.settings import WarehouseConfig
from warehouse.backend import Warehouse
from warehouse.connect import connect
from warehouse.queries import alerts as alerts_query
from warehouse.schema import migrate
from warehouse.writers_alerts import ALERTS, alert_rows, write_alerts

H = 3_600_000
T0 = 1_704_153_600_000  # 2024-01-02T00:00:00Z


@pytest.fixture(params=["server", "chdb"])
def wh(request: pytest.FixtureRequest, unique_name: Any) -> Iterator[Warehouse]:
    database = unique_name("alerts")
    if request.param == "server":
        server = request.getfixturevalue("clickhouse_server")
        config = WarehouseConfig(backend="server", host=server.host, port=server.tcp_port,
                                 database=database)
    else:
        path: Path = request.getfixturevalue("chdb_path")
        config = WarehouseConfig(backend="chdb", path=path, database=database)
    w = connect(config)
    try:
        migrate(w)
        yield w
    finally:
        w.execute(f"DROP DATABASE IF EXISTS {database}")
        w.close()


def record(ws: int, *, kind: str = "fired", journey: str = "purchase", step: str = "cart",
           channel: str = "web", **kw: Any) -> dict[str, Any]:
    base = {
        "alert_id": f"{journey}-{step}-{channel}-{ws}", "kind": kind, "journey": journey,
        "step": step, "step_index": 2, "channel": channel, "window_start_ms": ws,
        "window_end_ms": ws + H, "horizon_ms": 1_800_000, "population": 120, "dropped": 60,
        "rate": 0.5, "baseline": 0.1, "baseline_windows": 24, "threshold": 0.15,
        "confidence": 0.999, "p_value": 1.5e-40, "resolves": None,
        "definition_version": load_definitions().get(journey).version
        if journey in load_definitions().names else "",
    }
    base.update(kw)
    return base


def test_schema_matches_the_table_constant(wh: Warehouse) -> None:
    rows = wh.query(
        "SELECT name, type FROM system.columns WHERE database = %(db)s AND table = %(t)s",
        {"db": wh.database, "t": ALERTS.name},
    )
    assert dict(rows) == dict(ALERTS.schema)


def test_write_is_idempotent_and_query_filters_and_pages(wh: Warehouse) -> None:
    recs = [record(T0 + i * H) for i in range(5)]
    recs.append(record(T0 + 5 * H, kind="recovered", resolves=recs[-1]["alert_id"],
                       p_value=0.4))
    recs.append(record(T0 + 2 * H, channel="all"))
    recs.append(record(T0 + 2 * H, journey="onboarding", step="signup_complete",
                       channel="app"))
    assert write_alerts(wh, recs) == 8
    assert write_alerts(wh, recs[:4] + recs[:1]) == 4  # a replay; in-batch duplicate sent once
    rows, total = alerts_query.run(wh)
    assert total == 8 and len(rows) == 8  # FINAL: the replay does not double anything
    assert [r.window_start_ms for r in rows] == sorted((r.window_start_ms for r in rows),
                                                       reverse=True)
    rows, total = alerts_query.run(wh, journey="purchase", limit=2, offset=1)
    assert total == 7 and [r.window_start_ms for r in rows] == [T0 + 4 * H, T0 + 3 * H]
    rows, total = alerts_query.run(wh, kind="recovered")
    assert total == 1 and rows[0].resolves == recs[4]["alert_id"] and rows[0].p_value == 0.4
    rows, total = alerts_query.run(wh, from_ms=T0 + 2 * H, to_ms=T0 + 3 * H)
    assert total == 3 and {r.channel for r in rows} == {"web", "all", "app"}
    rows, total = alerts_query.run(wh, step="signup_complete", channel="app")
    assert total == 1 and rows[0].journey == "onboarding"
    assert rows[0].p_value == pytest.approx(1.5e-40) and rows[0].rate == 0.5
    got = alerts_query.get(wh, recs[0]["alert_id"])
    assert got is not None and got.population == 120 and got.window_end_ms == T0 + H
    assert alerts_query.get(wh, "no-such-alert") is None
    quoted = alerts_query.run(wh, journey="it's; DROP TABLE x")  # parameters, not SQL
    assert quoted == ([], 0)


def test_bad_filters_are_invalid_queries() -> None:
    with pytest.raises(InvalidQuery):
        alerts_query.build("db", kind="maybe")
    with pytest.raises(InvalidQuery, match=r"'from' \(1970-01-01T00:00:00\.011.*\) is after 'to'"):
        alerts_query.build("db", from_ms=11, to_ms=10)
    alerts_query.build("db", from_ms=10, to_ms=10)  # an empty half-open range: no alerts
    with pytest.raises(InvalidQuery):
        alerts_query.build("db", limit=0)
    with pytest.raises(InvalidQuery):
        alerts_query.build("db", offset=-1)
    with pytest.raises(ValueError):
        alert_rows([{"alert_id": "x"}])
