"""Definition versions on the product manager's reports, through the real app on BOTH
engines (and the rollups of compacted months): each report reads the rows of one
definition version (the current one, or `version=`) and echoes it, `compare=previous`
compares that same version, and the scorecard reads every definition's current version
(its alert counts too) and refuses `version=`.

Over the hand-made instances of pm_report_support (the current version), plus copies of
three of them under an older version OLD: A (converted, error_page on the way) and D
(abandoned at product_view) this week, H (abandoned) the week before; and an OLD alert."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from journeys.definitions import load_definitions
from journeys.settings import ApiSettings
from tests.integration.journey_report_support import open_warehouse
from tests.integration.pm_report_support import (
    T0,
    alert,
    current_version,
    hand_instances,
    hand_loaded,
)
from warehouse import compaction
from warehouse.writers_alerts import write_alerts
from warehouse.writers_journeys import write_journey_instances

WEEK = {"from": "2024-03-04", "to": "2024-03-10"}
OLD = "v-2023.12"
CURRENT = current_version("purchase")
_COUNT = iter(range(1_000_000))


@pytest.fixture(scope="module", params=["server", "chdb", "server-compacted"])
def client(request: pytest.FixtureRequest, run_id: str) -> Iterator[TestClient]:
    backend, _, compacted = request.param.partition("-")
    config = open_warehouse(request, backend, f"pmver_{run_id}_{next(_COUNT)}")
    for wh in hand_loaded(config):
        write_journey_instances(wh, [{**r, "definition_version": OLD} for r in hand_instances()
                                     if r["instance_id"] in ("A", "D", "H")])
        write_alerts(wh, [alert("v1", "fired", T0, definition_version=OLD)])
        if compacted:  # settled months: trend and funnel read journey_rollups
            compaction.compact(wh)
        app = create_app(ApiSettings(warehouse=config), warehouse=wh,
                         definitions=load_definitions())
        with TestClient(app) as c:
            yield c


def _get(client: TestClient, report: str, **params: Any) -> dict[str, Any]:
    got = client.get(f"/v1/journeys/purchase/{report}", params={**WEEK, **params})
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    assert body["version"] == params.get("version", CURRENT)
    return body


def test_time_to_convert_reads_one_version(client: TestClient) -> None:
    assert _get(client, "time-to-convert")["rows"][-1]["instances"] == 3  # A, B, E
    old = _get(client, "time-to-convert", version=OLD)["rows"]
    assert (old[-1]["segment"], old[-1]["instances"], old[-1]["p50_seconds"]) == (
        "end_to_end", 1, 1200.0)  # A alone: 20 minutes
    assert old[0]["instances"] == 1  # product_view -> add_to_cart: A only (D dropped)
    csv = client.get("/v1/journeys/purchase/time-to-convert",
                     params={**WEEK, "version": OLD, "format": "csv"})
    assert csv.status_code == 200 and csv.text.splitlines()[-1].startswith("end_to_end,")


def test_trend_reads_one_version(client: TestClient) -> None:
    weeks = {"from": "2024-02-26", "to": "2024-03-10", "interval": "week"}
    rows = _get(client, "trend", **weeks, version=OLD)["rows"]
    assert [(r["period"], r["opened"], r["converted"], r["abandoned"]) for r in rows] == [
        ("2024-02-26", 1, 0, 1), ("2024-03-04", 2, 1, 1)]  # H; A and D
    assert [r["opened"] for r in _get(client, "trend", **weeks)["rows"]] == [2, 7]


def test_designed_vs_actual_and_drivers_read_one_version(client: TestClient) -> None:
    seq = _get(client, "sequences", version=OLD)
    assert (seq["instances"], seq["truncated"], seq["followed"]) == (2, 0, 2)
    types = _get(client, "non-step-types", version=OLD)
    assert [t["type"] for t in types["types"]] == ["error_page"]  # A's; not C's or F's
    drivers = _get(client, "dropoff-drivers", step="product_view", version=OLD)
    assert (drivers["dropped"], drivers["went_on"]) == (1, 1)  # D; A
    assert _get(client, "dropoff-drivers", step="product_view")["went_on"] == 6


def test_compare_previous_compares_the_same_version(client: TestClient) -> None:
    body = _get(client, "funnel", compare="previous", version=OLD)
    assert (body["opened"], body["converted"]) == (2, 1)
    totals = body["totals_compare"]
    assert totals["opened"]["previous"] == 1  # H only, not G and H
    assert totals["conversion_rate"]["previous"] == 0.0
    ab = _get(client, "abandonment", compare="previous", version=OLD)
    assert ab["totals_compare"]["abandoned"]["previous"] == 1


def test_a_version_without_rows_and_a_malformed_one(client: TestClient) -> None:
    empty = _get(client, "trend", version="unversioned")
    assert all(r["opened"] == 0 for r in empty["rows"])
    assert _get(client, "sequences", version="nope")["instances"] == 0
    bad = client.get("/v1/journeys/purchase/time-to-convert", params={"version": "a b"})
    assert bad.status_code == 422


def test_scorecard_reads_current_versions(client: TestClient) -> None:
    body = client.get("/v1/scorecard", params=WEEK).json()
    purchase = body["journeys"][0]
    assert (purchase["journey"], purchase["version"]) == ("purchase", CURRENT)
    # 7 instances and 2 fired alerts of the current version: OLD's copies and alert not
    assert (purchase["opened"], purchase["alerts_fired"]) == (7, 2)
    assert purchase["compare"]["opened"]["previous"] == 2
    refused = client.get("/v1/scorecard", params={**WEEK, "version": OLD})
    assert refused.status_code == 422 and "per definition" in refused.json()["detail"]
