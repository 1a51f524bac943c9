"""Definition versions on BOTH engines (ClickHouse 18.16 server and chdb), through the
real app: rows of two versions of the same instances both stay under FINAL, reports read
the current version unless `version=` names another, GET /v1/journeys lists the stored
versions, and rows written before migration 0009 read as `unversioned`."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources

import pytest
import yaml
from fastapi.testclient import TestClient

from api.app import create_app
from journeys.definitions import DEFAULT_DEFINITIONS_FILE, Definitions, parse_definitions
from journeys.events import parse_occurred_at
from journeys.settings import ApiSettings, WarehouseConfig
from tests.integration.journey_report_support import _events, open_warehouse, reference, row
from tests.reference.journeys_ref import Ev, all_journeys
from tests.reference.journeys_ref import funnel as ref_funnel
from warehouse import schema
from warehouse.backend import Warehouse
from warehouse.connect import connect
from warehouse.migrations import MIGRATIONS
from warehouse.tables import JOURNEY_INSTANCES
from warehouse.writers_journeys import journey_instance_rows, write_journey_instances

RANGE = {"from": "2024-01-02", "to": "2024-01-03"}
_COUNT = iter(range(1_000_000))


PURCHASE = "steps: [product_view, add_to_cart, cart, shipping_details, payment_details, purchase]"


def changed_yaml() -> str:
    """The packaged definitions with `purchase` shortened: cart is now its goal."""
    text = resources.files("journeys").joinpath(DEFAULT_DEFINITIONS_FILE).read_text()
    assert PURCHASE in text
    return text.replace(PURCHASE, "steps: [product_view, add_to_cart, cart]")


def changed(defs: Definitions) -> Definitions:
    out = parse_definitions(yaml.safe_load(changed_yaml()))
    assert out.get("onboarding") == defs.get("onboarding")
    return out


@pytest.fixture(params=["server", "chdb"])
def config(request: pytest.FixtureRequest, run_id: str) -> Iterator[WarehouseConfig]:
    cfg = open_warehouse(request, request.param, f"dver_{run_id}_{next(_COUNT)}")
    yield cfg
    wh = connect(cfg)
    try:
        wh.execute(f"DROP DATABASE IF EXISTS {cfg.database}")
    finally:
        wh.close()


def _client(wh: Warehouse, config: WarehouseConfig, defs: Definitions) -> TestClient:
    return TestClient(create_app(ApiSettings(warehouse=config), warehouse=wh, definitions=defs))


def test_two_versions_side_by_side(config: WarehouseConfig) -> None:
    old_defs, old_instances = reference()
    new_defs = changed(old_defs)
    old, new = old_defs.get("purchase"), new_defs.get("purchase")
    assert old.version != new.version
    assert new_defs.get("onboarding").version == old_defs.get("onboarding").version
    evs = [Ev(e["event_id"], e.get("customer_id") or e["anonymous_id"], e["type"],
              e["channel"], parse_occurred_at(e["occurred_at"])) for e in _events()]
    new_instances = all_journeys([new], evs, watermark=None)
    wh = connect(config)
    try:
        schema.migrate(wh)
        write_journey_instances(wh, [row(old_defs, i) for i in old_instances])
        write_journey_instances(wh, [row(new_defs, i) for i in new_instances])
        shared = {i.instance_id for i in new_instances} & {
            i.instance_id for i in old_instances if i.journey == "purchase"}
        assert shared  # the same instance ids under both versions: both rows stay
        with _client(wh, config, new_defs) as client:
            current = client.get("/v1/journeys/purchase/funnel", params=RANGE).json()
            assert current["version"] == new.version
            assert {s["step"]: s["instances"] for s in current["steps"]} == ref_funnel(
                new, new_instances)
            before = client.get("/v1/journeys/purchase/funnel",
                                params={**RANGE, "version": old.version}).json()
            assert before["version"] == old.version
            expected_old = ref_funnel(old, old_instances)
            assert {s["step"]: s["instances"] for s in before["steps"]} == {
                k: v for k, v in expected_old.items() if k in new.steps}
            assert before["opened"] == expected_old["product_view"]
            listed = {j["name"]: j for j in client.get("/v1/journeys").json()["journeys"]}
            assert listed["purchase"]["version"] == new.version
            assert listed["purchase"]["versions_stored"] == sorted([old.version, new.version])
            assert listed["onboarding"]["versions_stored"] == [old_defs.get("onboarding").version]
            nothing = client.get("/v1/journeys/purchase/abandonment",
                                 params={**RANGE, "version": "nope"}).json()
            assert nothing["version"] == "nope" and nothing["rows"] == []
            assert client.get("/v1/journeys/purchase/funnel",
                              params={**RANGE, "version": "a b"}).status_code == 422
            who = new_instances[0].customer
            mine = client.get(f"/v1/customers/{who}/journeys",
                              params={"journey": "purchase"}).json()["journeys"]
            assert {j["definition_version"] for j in mine} == {new.version}
            assert len(mine) == sum(i.customer == who for i in new_instances)
    finally:
        wh.close()


def test_rows_before_0009_read_as_unversioned(config: WarehouseConfig,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    defs, instances = reference()
    purchase = [i for i in instances if i.journey == "purchase"]
    wh = connect(config)
    try:
        monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS[:8])
        schema.migrate(wh)
        n = JOURNEY_INSTANCES.columns.index("definition_version")  # nor later columns
        old_columns = JOURNEY_INSTANCES.columns[:n]
        rows = [r[:n] for r in journey_instance_rows([row(defs, i) for i in purchase])]
        wh.insert(JOURNEY_INSTANCES.name, old_columns, rows)
        monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS)
        applied = schema.migrate(wh)  # 0009 and any later migration
        assert applied == [m.name for m in MIGRATIONS[8:]]
        assert applied[0] == "0009_definition_versions"
        assert schema.migrate(wh) == []  # safe to run twice
        with _client(wh, config, defs) as client:
            body = client.get("/v1/journeys").json()
            listed = {j["name"]: j for j in body["journeys"]}
            assert listed["purchase"]["versions_stored"] == ["unversioned"]
            default = client.get("/v1/journeys/purchase/funnel", params=RANGE).json()
            assert default["opened"] == 0  # the current version has no rows yet
            legacy = client.get("/v1/journeys/purchase/funnel",
                                params={**RANGE, "version": "unversioned"}).json()
            expected = ref_funnel(defs.get("purchase"), purchase)
            assert {s["step"]: s["instances"] for s in legacy["steps"]} == expected
            assert legacy["version"] == "unversioned"
    finally:
        wh.close()

