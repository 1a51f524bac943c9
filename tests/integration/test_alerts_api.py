"""GET /v1/alerts, /v1/alerts/rules and /v1/alerts/{id} over both warehouse engines."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from journeys.definitions import load_definitions
from journeys.settings import ApiSettings, WarehouseConfig
from stream.engine.alert_verdict import alert_id
from tests.integration.test_alerts_warehouse import T0, H, record
from warehouse.connect import connect
from warehouse.schema import migrate
from warehouse.writers_alerts import write_alerts


@pytest.fixture(params=["server", "chdb"])
def client(request: pytest.FixtureRequest, unique_name: Any) -> Iterator[TestClient]:
    database = unique_name("alertsapi")
    if request.param == "server":
        server = request.getfixturevalue("clickhouse_server")
        config = WarehouseConfig(backend="server", host=server.host, port=server.tcp_port,
                                 database=database)
    else:
        path: Path = request.getfixturevalue("chdb_path")
        config = WarehouseConfig(backend="chdb", path=path, database=database)
    wh = connect(config)
    try:
        migrate(wh)
        recs = [record(T0 + i * H, alert_id=alert_id("purchase", "cart", "web", T0 + i * H))
                for i in range(3)]
        recs.append(record(T0 + 3 * H, kind="recovered", resolves=recs[-1]["alert_id"],
                           alert_id=alert_id("purchase", "cart", "web", T0 + 3 * H)))
        write_alerts(wh, recs, created_at_ms=T0 + 10 * H)
        app = create_app(ApiSettings(warehouse=config), warehouse=wh,
                         definitions=load_definitions())
        with TestClient(app) as c:
            yield c
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {database}")
        wh.close()


def test_list_filter_page(client: TestClient) -> None:
    body = client.get("/v1/alerts").json()
    assert body["total"] == 4 and body["next_offset"] is None
    first = body["alerts"][0]
    assert first["kind"] == "recovered" and first["window_start"] == "2024-01-02T03:00:00Z"
    assert first["resolves"] == body["alerts"][1]["alert_id"]
    assert first["horizon"] == "30m" and first["created_at"] == "2024-01-02T10:00:00Z"
    page = client.get("/v1/alerts", params={"limit": 2, "kind": "fired"}).json()
    assert page["total"] == 3 and page["next_offset"] == 2 and len(page["alerts"]) == 2
    assert page["alerts"][0]["resolves"] is None
    page = client.get("/v1/alerts", params={"limit": 2, "offset": 2, "kind": "fired"}).json()
    assert page["next_offset"] is None and len(page["alerts"]) == 1
    ranged = client.get("/v1/alerts", params={
        "from": "2024-01-02T01:00:00Z", "to": "2024-01-02T03:00:00", "journey": "purchase",
        "step": "cart", "channel": "web"}).json()
    assert [a["window_start"] for a in ranged["alerts"]] == [
        "2024-01-02T02:00:00Z", "2024-01-02T01:00:00Z"]
    assert client.get("/v1/alerts", params={"journey": "nope"}).json()["total"] == 0
    # a version of a journey no longer defined: its stored alerts (none here), not a 404
    gone = client.get("/v1/alerts", params={"journey": "nope", "version": "v1"})
    assert gone.status_code == 200 and gone.json()["total"] == 0
    assert client.get("/v1/alerts", params={"version": "v1"}).status_code == 422  # no journey


def test_one_alert(client: TestClient) -> None:
    aid = alert_id("purchase", "cart", "web", T0)
    got = client.get(f"/v1/alerts/{aid}")
    assert got.status_code == 200 and got.json()["population"] == 120
    missing = client.get(f"/v1/alerts/{'0' * 24}")
    assert missing.status_code == 404 and missing.json()["error"] == "NotFound"
    assert client.get("/v1/alerts/not-an-id").status_code == 422
    documented = client.get("/openapi.json").json()["paths"]["/v1/alerts/{alert_id}"]["get"]
    assert {"404", "422"} <= set(documented["responses"])  # every answer is in the spec


@pytest.mark.parametrize("params", [
    {"kind": "maybe"}, {"limit": 0}, {"limit": 5000}, {"offset": -1},
    {"from": "yesterday"}, {"from": "2024-01-02T00:00:00Z", "to": "2024-01-01T00:00:00Z"},
    {"journey": "x" * 200},
    {"to": "0.5"}, {"from": "1700000000"},  # numbers were read as epoch seconds: 200
])
def test_bad_input_is_4xx_never_500(client: TestClient, params: dict[str, Any]) -> None:
    r = client.get("/v1/alerts", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["error"] in ("InvalidRequest", "InvalidQuery")


def test_times_before_1970_are_the_start_of_time(client: TestClient) -> None:
    """Nothing is older than 1970: a `from` before it selects what no `from` does (it
    was a 422 the schema did not state)."""
    everything = client.get("/v1/alerts").json()
    early = client.get("/v1/alerts", params={"from": "1960-01-01T00:00:00Z"})
    assert early.status_code == 200 and early.json() == everything
    none = client.get("/v1/alerts", params={"to": "1960-01-01T00:00:00Z"})
    assert none.status_code == 200 and none.json()["total"] == 0


def test_rules_come_from_definitions(client: TestClient) -> None:
    body = client.get("/v1/alerts/rules").json()
    rules = {r["journey"]: r for r in body["rules"]}
    assert rules["purchase"]["steps"][-1] == "payment_details"  # the goal is not evaluated
    assert rules["purchase"]["window"] == "1h" and rules["purchase"]["horizon"] == "30m"
    assert rules["onboarding"]["min_volume"] == 20 and body["definitions_version"]


def test_api_never_imports_stream() -> None:
    code = "import sys, api.app, api.routes.alerts; print([m for m in sys.modules if m.startswith('stream')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == "[]"
