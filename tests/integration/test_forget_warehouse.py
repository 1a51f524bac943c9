"""Forgetting a customer in the warehouse on BOTH engines (ClickHouse 18.16 server and
chdb): every table is searched for the id and its linked anonymous ids afterwards, the
other customer is untouched, a second run deletes nothing, and the audit row holds
counts and a hash, never the id."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from journeys.settings import WarehouseConfig
from tests.integration.journey_report_support import open_warehouse
from warehouse import forget
from warehouse.backend import Warehouse
from warehouse.connect import connect
from warehouse.schema import migrate
from warehouse.sql import qualified
from warehouse.tables import (
    ALL_TABLES,
    DEAD_LETTERS,
    FORGET_AUDIT,
    IDENTITY_MERGES,
    JOURNEY_INSTANCES,
    LATE_EVENTS,
    SESSIONS,
    TOUCHPOINTS,
)
from warehouse.writers_journeys import journey_instance_row

T = 1_704_153_600_000
_COUNT = iter(range(1_000_000))
GONE = ("c-1", "a-1", "a-2")  # the customer, a device that logged in, one linked earlier
KEPT = ("c-2", "a-9")


def _touch(eid: str, cust: str, anon: str, t: int) -> tuple[Any, ...]:
    return (eid, "product_view", "web", t, t // 1000, cust, anon, "", "{}", "{}", t // 1000)


def _instance(iid: str, key: str) -> tuple[Any, ...]:
    return journey_instance_row({
        "instance_id": iid, "journey": "purchase", "customer_id": key, "status": "open",
        "opened_at_ms": T, "furthest_step": 0, "furthest_step_name": "product_view",
        "path_types": ["product_view"], "path_channels": ["web"], "path_times": [T],
        "version": 1, "definition_version": "v1"})


def _load(wh: Warehouse) -> None:
    wh.insert(TOUCHPOINTS.name, TOUCHPOINTS.columns, [
        _touch("e1", "", "a-1", T), _touch("e2", "c-1", "a-1", T + 1),
        _touch("e3", "", "a-2", T + 2), _touch("e4", "c-1", "", T + 3),
        _touch("k1", "c-2", "a-9", T), _touch("k2", "", "a-9", T + 5)])
    wh.insert(SESSIONS.name, SESSIONS.columns, [
        ("s1", "c-1", T, T + 3, T // 1000, 3, ["web"], "web", 3, 0),
        ("s2", "a-2", T, T + 2, T // 1000, 1, ["web"], "web", 1, 0),
        ("s9", "c-2", T, T + 5, T // 1000, 2, ["web"], "web", 2, 0)])
    wh.insert(JOURNEY_INSTANCES.name, JOURNEY_INSTANCES.columns,
              [_instance("i1", "c-1"), _instance("i2", "a-1"), _instance("i9", "c-2")])
    wh.insert(IDENTITY_MERGES.name, IDENTITY_MERGES.columns, [
        ("a-1", "c-1", T + 1, T // 1000, "e2", "product_view", "web", T // 1000),
        ("a-2", "c-1", T - 9, T // 1000, "e0", "identify", "web", T // 1000),
        ("a-9", "c-2", T, T // 1000, "k1", "product_view", "web", T // 1000)])
    wh.insert(LATE_EVENTS.name, LATE_EVENTS.columns, [
        ("e3", T + 2, T // 1000, T + 9, "validate", "raw", 0, 7, T // 1000),
        ("k2", T + 5, T // 1000, T + 9, "validate", "raw", 0, 8, T // 1000)])
    wh.insert(DEAD_LETTERS.name, DEAD_LETTERS.columns, [
        (T // 1000, "validate", "unknown_channel", "e5",
         '{"event_id":"e5","channel":"fax","anonymous_id":"a-2"}', "raw", 1, 3),
        (T // 1000, "collector", "missing_field", "",
         '{"customer_id": "c-1", "type": "x"}', "", -1, -1),
        (T // 1000, "validate", "unknown_channel", "k3",
         '{"event_id":"k3","channel":"fax","customer_id":"c-2"}', "raw", 1, 4)])


@pytest.fixture(params=["server", "chdb"])
def wh(request: pytest.FixtureRequest, run_id: str) -> Iterator[Warehouse]:
    config: WarehouseConfig = open_warehouse(request, request.param,
                                             f"fgt_{run_id}_{next(_COUNT)}")
    w = connect(config)
    try:
        migrate(w)
        _load(w)
        yield w
    finally:
        w.execute(f"DROP DATABASE IF EXISTS {config.database}")
        w.close()


def _traces(wh: Warehouse, ids: tuple[str, ...]) -> dict[str, int]:
    """Rows of every table (but the audit) with any String column holding one of the
    ids, or an id inside its text (dead letters' originals)."""
    out = {}
    for table in ALL_TABLES:
        if table.name == FORGET_AUDIT.name:
            continue
        cols = [c for c, t in table.schema if t == "String"]
        cond = " OR ".join(f"position({c}, %(i{n})s) > 0" for c in cols
                           for n in range(len(ids)))
        params = {f"i{n}": i for n, i in enumerate(ids)}
        out[table.name] = int(wh.query(
            f"SELECT count() FROM {qualified(wh.database, table.name)} WHERE {cond}",
            params)[0][0])
    return out


def test_forget_leaves_no_trace_and_runs_twice(wh: Warehouse) -> None:
    assert sum(_traces(wh, GONE).values()) > 0
    kept_before = _traces(wh, KEPT)
    plan = forget.plan(wh, "c-1")
    assert plan.anonymous_ids == ["a-1", "a-2"]
    assert plan.event_ids == ["e1", "e2", "e3", "e4"]
    assert plan.rows == {"touchpoints": 4, "sessions": 2, "journey_instances": 2,
                         "identity_merges": 2, "late_events": 1, "dead_letters": 2}
    done: list[str] = []
    forget.apply(wh, plan, progress=done.append)
    assert done == [t for t, _ in forget.CONDITIONS]
    forget.audit(wh, plan, requested_by="ops", via="cli", stream="waited")
    assert _traces(wh, GONE) == dict.fromkeys(_traces(wh, GONE), 0)
    assert _traces(wh, KEPT) == kept_before  # the other customer is untouched
    again = forget.plan(wh, "c-1")
    assert again.total == 0 and again.anonymous_ids == []
    forget.apply(wh, again)  # safe to run twice: nothing left to delete
    [row] = wh.query(f"SELECT subject, linked_ids, tables, rows, requested_by, via, stream "
                     f"FROM {qualified(wh.database, FORGET_AUDIT.name)}")
    assert row[0] == forget.subject("c-1") and "c-1" not in str(row)
    assert (row[1], dict(zip(row[2], row[3], strict=True))) == (2, plan.rows)
    assert tuple(row[4:]) == ("ops", "cli", "waited")


def test_delete_customer_needs_admin_and_forgets(wh: Warehouse) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from journeys.settings import ApiSettings

    keys = {"pm": "rk_read_only_key_1234", "ops": {"key": "ak_admin_key_123456",
                                                   "scopes": ["admin"]}}
    settings = ApiSettings(api_keys=keys)  # type: ignore[arg-type]
    with TestClient(create_app(settings, warehouse=wh)) as client:
        url = "/v1/customers/c-1"
        assert client.delete(url).status_code == 401
        assert client.delete(url, headers={"X-API-Key": "rk_read_only_key_1234"}
                             ).status_code == 403
        got = client.delete(url, headers={"X-API-Key": "ak_admin_key_123456"})
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["anonymous_ids"] == 2 and body["total"] == 13
        assert body["stream"].startswith("not reached")  # no broker configured here
        assert sum(_traces(wh, GONE).values()) == 0
        twice = client.delete(url, headers={"X-API-Key": "ak_admin_key_123456"}).json()
        assert twice["total"] == 0
    [who] = wh.query(f"SELECT DISTINCT requested_by, via FROM "
                     f"{qualified(wh.database, FORGET_AUDIT.name)}")
    assert tuple(who) == ("ops", "api")
