"""The product manager's endpoints and compare=previous through the real app (TestClient)
on both engines, over the hand-made instances of pm_report_support: JSON figures, CSV
shapes, the from/to used, and the documented refusals."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from journeys.definitions import load_definitions
from journeys.settings import ApiSettings
from tests.integration.journey_report_support import open_warehouse
from tests.integration.pm_report_support import hand_loaded
from warehouse.queries._stats import two_proportion_p

WEEK = {"from": "2024-03-04", "to": "2024-03-10"}
_COUNT = iter(range(1_000_000))


@pytest.fixture(scope="module", params=["server", "chdb"])
def client(request: pytest.FixtureRequest, run_id: str) -> Iterator[TestClient]:
    config = open_warehouse(request, request.param, f"pmapi_{run_id}_{next(_COUNT)}")
    for wh in hand_loaded(config):
        app = create_app(ApiSettings(warehouse=config), warehouse=wh,
                         definitions=load_definitions())
        with TestClient(app) as c:
            yield c


def _csv(client: TestClient, path: str, **params: Any) -> pd.DataFrame:
    got = client.get(path, params={**WEEK, **params, "format": "csv"})
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    return pd.read_csv(io.StringIO(got.text))


def test_time_to_convert(client: TestClient) -> None:
    body = client.get("/v1/journeys/purchase/time-to-convert", params=WEEK).json()
    assert (body["from"], body["to"], body["total_rows"]) == ("2024-03-04", "2024-03-10", 6)
    assert [b["label"] for b in body["buckets"]][:2] == ["0-1m", "1m-5m"]
    end = body["rows"][-1]
    assert (end["segment"], end["instances"], end["p50_seconds"], end["p90_seconds"]) == (
        "end_to_end", 3, 3600.0, 7200.0)
    assert body["rows"][1]["measured"] == 3  # E's capped path: unmeasured
    df = _csv(client, "/v1/journeys/purchase/time-to-convert", breakdown="channel")
    assert list(df.columns[:3]) == ["channel", "segment", "from_step"]
    assert "bucket_7d+" in df.columns and len(df) == 3 * 6  # app, email, web


def test_default_range_is_the_last_week_with_data(client: TestClient) -> None:
    body = client.get("/v1/journeys/purchase/time-to-convert").json()
    assert (body["from"], body["to"]) == ("2023-12-05", "2024-03-04")
    card = client.get("/v1/scorecard").json()
    assert (card["from"], card["to"]) == ("2023-12-05", "2024-03-04")


def test_trend(client: TestClient) -> None:
    body = client.get("/v1/journeys/purchase/trend",
                      params={"from": "2024-02-26", "to": "2024-03-10",
                              "interval": "week"}).json()
    assert [(r["period"], r["opened"], r["converted"]) for r in body["rows"]] == [
        ("2024-02-26", 2, 1), ("2024-03-04", 7, 3)]
    df = _csv(client, "/v1/journeys/purchase/trend", breakdown="context.country")
    assert list(df.columns[:5]) == ["period", "first_day", "last_day", "partial",
                                    "context.country"]
    assert int(df.opened.sum()) == 7


def test_compare_previous(client: TestClient) -> None:
    body = client.get("/v1/journeys/purchase/funnel", params={**WEEK, "compare": "previous"})
    body = body.json()
    assert (body["compare"], body["previous_from"], body["previous_to"]) == (
        "previous", "2024-02-26", "2024-03-03")
    rate = body["totals_compare"]["conversion_rate"]
    assert rate["previous"] == 0.5 and rate["p_value"] == pytest.approx(
        two_proportion_p(3, 7, 1, 2))
    assert body["steps"][0]["compare"]["instances"]["previous"] == 2
    plain = client.get("/v1/journeys/purchase/funnel", params=WEEK).json()
    assert plain["compare"] is None and plain["steps"][0]["compare"] is None
    ab = client.get("/v1/journeys/purchase/abandonment",
                    params={**WEEK, "compare": "previous", "breakdown": "step,channel"}).json()
    assert ("product_view", "web", 0, 1) in [
        (r["step"], r["channel"], r["abandoned"], r["compare"]["abandoned"]["previous"])
        for r in ab["rows"]]
    df = _csv(client, "/v1/journeys/purchase/detours", compare="previous")
    assert list(df.columns) == ["kind", "step", "detours", "instances", "detours_previous",
                                "detours_change", "instances_previous", "instances_change"]
    det = client.get("/v1/journeys/purchase/detours",
                     params={**WEEK, "compare": "previous"}).json()
    assert {s["kind"]: s["compare"]["abandoned_with"]["change"] for s in det["shares"]}[
        "off_path"] == 1
    fdf = _csv(client, "/v1/journeys/purchase/funnel", compare="previous")
    assert "share_of_opened_p_value" in fdf.columns and "instances_change" in fdf.columns


@pytest.mark.parametrize(("path", "params", "message"), [
    ("/v1/journeys/purchase/funnel", {"compare": "previous", "breakdown": "day"},
     "cannot be combined with a 'day' breakdown"),
    ("/v1/journeys/purchase/abandonment",
     {"compare": "previous", "from": "1970-01-01", "to": "1970-01-03"}, "no previous period"),
    ("/v1/journeys/purchase/dropoff-drivers", {"step": "purchase"}, "is the goal of journey"),
    ("/v1/journeys/purchase/dropoff-drivers", {"step": "nope"}, "is not a step of journey"),
    ("/v1/journeys/purchase/trend", {"breakdown": "day"}, "unknown breakdown 'day'"),
])
def test_refusals(client: TestClient, path: str, params: dict[str, str], message: str) -> None:
    got = client.get(path, params={**WEEK, **params})
    assert got.status_code == 422 and message in got.json()["detail"]


def test_dropoff_drivers(client: TestClient) -> None:
    body = client.get("/v1/journeys/purchase/dropoff-drivers",
                      params={**WEEK, "step": "product_view", "top": 2}).json()
    assert (body["dropped"], body["went_on"], body["features_tested"]) == (1, 6, 10)
    assert [(d["feature"], d["value"]) for d in body["drivers"]] == [
        ("context.device", "ios"), ("entry_channel", "email")]
    df = _csv(client, "/v1/journeys/purchase/dropoff-drivers", step="product_view")
    assert list(df.columns[:3]) == ["feature", "value", "dropped_with"] and len(df) == 4


def test_sequences_and_non_step_types(client: TestClient) -> None:
    body = client.get("/v1/journeys/purchase/sequences", params={**WEEK, "limit": 2}).json()
    assert (body["instances"], body["truncated"], body["followed"]) == (7, 1, 4)
    assert body["designed"][0] == "product_view" and body["other"]["instances"] == 4
    df = _csv(client, "/v1/journeys/purchase/sequences", limit=2)
    assert df.sequence.iloc[-1] == "(other)" and int(df.instances.sum()) == 6
    types = client.get("/v1/journeys/purchase/non-step-types", params=WEEK).json()
    assert [t["type"] for t in types["types"]] == ["error_page", "newsletter_open",
                                                    "support_chat"]
    tdf = _csv(client, "/v1/journeys/purchase/non-step-types")
    assert list(tdf.after_step) == ["shipping_details", "add_to_cart", "product_view"]


def test_scorecard(client: TestClient) -> None:
    body = client.get("/v1/scorecard", params=WEEK).json()
    assert (body["previous_from"], body["previous_to"]) == ("2024-02-26", "2024-03-03")
    purchase = body["journeys"][0]
    assert (purchase["journey"], purchase["opened"], purchase["worst_step"],
            purchase["alerts_fired"]) == ("purchase", 7, "product_view", 2)
    assert purchase["compare"]["opened"]["previous"] == 2
    # journey value (pm_report_support: A 120 + B 80.5 converted, C 45 + I 30 abandoned)
    assert (purchase["value_converted"], purchase["value_abandoned"],
            purchase["converted_with_value"], purchase["abandoned_with_value"]) == (
        200.5, 75.0, 2, 2)
    assert purchase["compare"]["value_converted"]["previous"] == 50.0
    assert body["journeys"][1]["value_converted"] is None  # onboarding: no values
    df = _csv(client, "/v1/scorecard", **WEEK)
    assert list(df.journey) == ["purchase", "onboarding"]
    assert "conversion_rate_p_value" in df.columns
    assert (df.value_converted[0], df.value_abandoned[0]) == (200.5, 75.0)
    assert df.value_converted_previous[0] == 50.0
