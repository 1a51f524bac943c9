"""`GET /v1/customers?q=` on both engines through the real app, over the hand-made data of
pm_report_support (customers c-A .. c-I, devices dev-a1/dev-a2 of c-A, dev-x of c-X)
plus rows that must not count: another definition version, a retracted instance."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from journeys.definitions import load_definitions
from journeys.settings import ApiSettings
from tests.integration.journey_report_support import open_warehouse
from tests.integration.pm_report_support import ATC, PV, hand_loaded, instance
from warehouse.writers_journeys import journey_retraction_row, write_journey_instances

_COUNT = iter(range(1_000_000))
HAND = ["c-A", "c-B", "c-C", "c-D", "c-E", "c-F", "c-G", "c-H", "c-I"]


@pytest.fixture(scope="module", params=["server", "chdb"])
def client(request: pytest.FixtureRequest, run_id: str) -> Iterator[TestClient]:
    config = open_warehouse(request, request.param, f"csearch_{run_id}_{next(_COUNT)}")
    for wh in hand_loaded(config):
        extra = [
            {**instance("A2", "open", [(PV, 0, "app"), (ATC, 90, "app")]), "customer_id": "c-A"},
            {**instance("B0", "abandoned", [(PV, 0, "web")], definition_version="old"),
             "customer_id": "c-B"},
            {**instance("C2", "open", [(PV, 0, "web")]), "customer_id": "c-C"},
        ]
        c2 = extra[2]
        write_journey_instances(wh, extra, [journey_retraction_row(
            "C2", "purchase", "c-C", c2["opened_at_ms"], 2, c2["definition_version"])])
        app = create_app(ApiSettings(warehouse=config), warehouse=wh,
                         definitions=load_definitions())
        with TestClient(app) as c:
            yield c


def search(client: TestClient, **params: Any) -> Any:
    got = client.get("/v1/customers", params=params)
    assert got.status_code == 200, got.text
    return got.json()


def test_by_customer_id_prefix(client: TestClient) -> None:
    body = search(client, q="c-")
    assert [c["customer_id"] for c in body["customers"]] == HAND and not body["more"]
    a, b, c = body["customers"][:3]
    # c-A: A converted + A2 open (T0 + 90 min its last event); two devices linked
    assert (a["journeys"], a["converted"], a["abandoned"], a["open"]) == (2, 1, 0, 1)
    assert (a["first_opened_at"], a["last_seen_at"]) == ("2024-03-04T10:00:00Z",
                                                         "2024-03-04T11:30:00Z")
    assert (a["anonymous_ids"], a["anonymous_id_count"], a["matched_by"],
            a["matched_anonymous_ids"]) == (["dev-a1", "dev-a2"], 2, "customer_id", [])
    assert b["journeys"] == 1  # B0 is of another definition version
    assert c["journeys"] == 1  # C2 was retracted
    assert body["versions"] == {d.name: d.version for d in load_definitions().journeys}


def test_limit_says_there_are_more(client: TestClient) -> None:
    body = search(client, q="c-", limit=3)
    assert [c["customer_id"] for c in body["customers"]] == HAND[:3] and body["more"]
    assert search(client, q="c-I")["customers"][0]["customer_id"] == "c-I"
    assert search(client, q="zzz") == {**search(client, q="zzz"), "customers": [],
                                       "more": False}


def test_through_linked_anonymous_ids(client: TestClient) -> None:
    [a] = search(client, q="dev-a")["customers"]
    assert (a["customer_id"], a["matched_by"], a["matched_anonymous_ids"],
            a["journeys"]) == ("c-A", "anonymous_id", ["dev-a1", "dev-a2"], 2)
    [x] = search(client, q="dev-x")["customers"]  # linked, no journey instance yet
    assert (x["customer_id"], x["journeys"], x["first_opened_at"], x["last_seen_at"],
            x["anonymous_ids"]) == ("c-X", 0, None, None, ["dev-x"])


def test_one_journey_at_another_version(client: TestClient) -> None:
    [b] = search(client, q="c-B", journey="purchase", version="old")["customers"]
    assert (b["journeys"], b["abandoned"]) == (1, 1)
    # ids are found among the instances counted: nobody has an onboarding journey
    assert search(client, q="c-", journey="onboarding")["customers"] == []
    [a] = search(client, q="dev-a", journey="onboarding")["customers"]  # a link still finds
    assert (a["customer_id"], a["journeys"]) == ("c-A", 0)


@pytest.mark.parametrize(("params", "status", "says"), [
    ({"q": ""}, 422, "q"),
    ({"q": "c-", "limit": 0}, 422, "limit"),
    ({"q": "c-", "limit": 101}, 422, "limit"),
    ({"q": "x" * 129}, 422, "q"),
    ({"q": "c-", "version": "old"}, 422, "needs 'journey'"),
    ({"q": "c-", "journey": "nope"}, 404, "nope"),
])
def test_refusals(client: TestClient, params: dict[str, Any], status: int, says: str) -> None:
    got = client.get("/v1/customers", params=params)
    assert got.status_code == status and says in got.text, got.text
