"""GET /v1/journeys/{name}/funnel|abandonment|detours|paths and /v1/customers/{id}/journeys
over both engines, through the real app (TestClient) on the reference data set."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from journeys.settings import ApiSettings
from tests.integration.journey_report_support import frame, loaded, open_warehouse
from tests.reference.journeys_ref import Instance
from tests.reference.journeys_ref import funnel as ref_funnel
from warehouse.writers_identity import write_identity_merges

RANGE = {"from": "2024-01-02", "to": "2024-01-03"}
_COUNT = iter(range(1_000_000))


@pytest.fixture(scope="module", params=["server", "chdb"])
def api(request: pytest.FixtureRequest, run_id: str) -> Iterator[tuple[TestClient, Any]]:
    config = open_warehouse(request, request.param, f"jrapi_{run_id}_{next(_COUNT)}")
    for wh, defs, instances in loaded(config):
        app = create_app(ApiSettings(warehouse=config), warehouse=wh, definitions=defs)
        with TestClient(app) as client:
            yield client, (defs, instances)


def test_funnel(api: tuple[TestClient, Any]) -> None:
    client, (defs, instances) = api
    body = client.get("/v1/journeys/purchase/funnel", params=RANGE).json()
    expected = ref_funnel(defs.get("purchase"), instances)
    assert {s["step"]: s["instances"] for s in body["steps"]} == expected
    assert body["from"] == "2024-01-02" and body["breakdown"] == []
    assert body["opened"] == expected["product_view"]
    assert body["conversion_rate"] == pytest.approx(body["converted"] / body["opened"])
    by_channel = client.get("/v1/journeys/purchase/funnel",
                            params={**RANGE, "breakdown": "channel"}).json()
    web = [s for s in by_channel["steps"] if s["channel"] == "web"]
    only_web = client.get("/v1/journeys/purchase/funnel",
                          params={**RANGE, "channel": "web"}).json()
    assert [s["instances"] for s in web] == [s["instances"] for s in only_web["steps"]]


def test_funnel_csv(api: tuple[TestClient, Any]) -> None:
    client, (defs, instances) = api
    got = client.get("/v1/journeys/purchase/funnel",
                     params={**RANGE, "format": "csv", "breakdown": ["day"]})
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    df = pd.read_csv(io.StringIO(got.text))
    assert list(df.columns[:2]) == ["day", "step"]
    totals = df.groupby("step", sort=False).instances.sum().to_dict()
    assert totals == ref_funnel(defs.get("purchase"), instances)


def test_abandonment(api: tuple[TestClient, Any]) -> None:
    client, (defs, instances) = api
    df = frame(defs, instances)
    ab = df[(df.journey == "purchase") & (df.status == "abandoned")]
    body = client.get("/v1/journeys/purchase/abandonment", params=RANGE).json()
    assert {r["step"]: r["abandoned"] for r in body["rows"]} == ab.dropped_at.value_counts().to_dict()
    assert body["abandoned"] == len(ab) and body["breakdown"] == ["step"]
    hourly = client.get("/v1/journeys/purchase/abandonment",
                        params={**RANGE, "breakdown": "hour,step", "format": "csv"})
    csv = pd.read_csv(io.StringIO(hourly.text))
    assert list(csv.columns) == ["hour", "step", "abandoned", "share_of_abandoned"]
    assert int(csv.abandoned.sum()) == len(ab)


def test_detours(api: tuple[TestClient, Any]) -> None:
    client, (_, instances) = api
    body = client.get("/v1/journeys/purchase/detours", params=RANGE).json()
    purchase: list[Instance] = [i for i in instances if i.journey == "purchase"]
    assert sum(r["detours"] for r in body["rows"]) == sum(len(i.detours) for i in purchase)
    shares = {s["kind"]: s for s in body["shares"]}
    abandoned = [i for i in purchase if i.status == "abandoned"]
    for kind, s in shares.items():
        with_kind = sum(any(x.kind == kind for x in i.detours) for i in abandoned)
        assert s["abandoned_with"] == with_kind and s["abandoned"] == len(abandoned)
    csv = client.get("/v1/journeys/purchase/detours", params={**RANGE, "format": "csv"})
    assert list(pd.read_csv(io.StringIO(csv.text)).columns) == [
        "kind", "step", "detours", "instances"]


def test_paths(api: tuple[TestClient, Any]) -> None:
    client, (_, instances) = api
    abandoned = sum(i.journey == "purchase" and i.status == "abandoned" for i in instances)
    body = client.get("/v1/journeys/purchase/paths", params={**RANGE, "limit": 2}).json()
    assert len(body["paths"]) == 2 and body["abandoned"] == abandoned
    assert sum(p["instances"] for p in body["paths"]) + body["other"]["instances"] == abandoned
    assert body["other"]["distinct_paths"] == body["distinct_paths"] - 2
    csv = client.get("/v1/journeys/purchase/paths",
                     params={**RANGE, "limit": 2, "format": "csv"})
    df = pd.read_csv(io.StringIO(csv.text))
    assert df.path.iloc[-1] == "(other)" and int(df.instances.sum()) == abandoned


def test_customer_journeys(api: tuple[TestClient, Any]) -> None:
    client, (_, instances) = api
    counts: dict[str, int] = {}
    for i in instances:
        counts[i.customer] = counts.get(i.customer, 0) + 1
    customer = max(counts, key=lambda c: (counts[c], c))
    body = client.get(f"/v1/customers/{customer}/journeys", params={"limit": 1}).json()
    assert body["total"] == counts[customer] and len(body["journeys"]) == 1
    first = body["journeys"][0]
    assert first["path"][0]["type"] in ("product_view", "signup_start")
    assert first["opened_at"].endswith("Z") and first["entry_channel"] == first["path"][0]["channel"]
    nxt = body["next_offset"]
    if counts[customer] > 1:
        assert nxt == 1
    missing = client.get("/v1/customers/nobody-here/journeys")
    assert missing.status_code == 404 and missing.json()["error"] == "NotFound"
    assert client.get(f"/v1/customers/{customer}/journeys",
                      params={"journey": "nope"}).status_code == 404


@pytest.mark.parametrize("report", ["funnel", "abandonment", "detours", "paths"])
def test_errors(api: tuple[TestClient, Any], report: str) -> None:
    client, _ = api
    unknown = client.get(f"/v1/journeys/nope/{report}")
    assert unknown.status_code == 404 and unknown.json()["error"] == "DefinitionNotFound"
    bad = client.get(f"/v1/journeys/purchase/{report}", params={"breakdown": "country"})
    assert bad.status_code == 422 and "breakdown" in bad.json()["detail"]
    reversed_range = client.get(f"/v1/journeys/purchase/{report}",
                                params={"from": "2024-02-01", "to": "2024-01-01"})
    assert reversed_range.status_code == 422 and "after" in reversed_range.json()["detail"]
    assert client.get(f"/v1/journeys/purchase/{report}",
                      params={"from": "yesterday"}).status_code == 422
    assert client.get(f"/v1/journeys/purchase/{report}",
                      params={"format": "xml"}).status_code == 422


def test_openapi_lists_the_reports(api: tuple[TestClient, Any]) -> None:
    client, _ = api
    spec = client.get("/openapi.json").json()
    for path in ("/v1/journeys/{name}/funnel", "/v1/journeys/{name}/abandonment",
                 "/v1/journeys/{name}/detours", "/v1/journeys/{name}/paths",
                 "/v1/customers/{customer_id}/journeys"):
        assert path in spec["paths"]


@pytest.mark.parametrize("report", ["funnel", "abandonment", "detours"])
def test_context_breakdown(api: tuple[TestClient, Any], report: str) -> None:
    client, (defs, instances) = api
    df = frame(defs, instances)
    cohort = df[df.journey == "purchase"]
    body = client.get(f"/v1/journeys/purchase/{report}",
                      params={**RANGE, "breakdown": "context.country"}).json()
    rows = body["steps" if report == "funnel" else "rows"]
    assert body["breakdown"] == ["context.country"]
    seen = {r["context"]["country"] for r in rows}
    expected = set(cohort["context.country"].where(cohort["context.country"].notna(), None))
    if report == "abandonment":
        ab = cohort[cohort.status == "abandoned"]
        expected = set(ab["context.country"].where(ab["context.country"].notna(), None))
        by_country = ab["context.country"].fillna("(none)").value_counts().to_dict()
        assert {r["context"]["country"] or "(none)": r["abandoned"] for r in rows} == by_country
    if report != "detours":
        assert seen == expected and None in seen
    assert all(r["channel"] is None and r["day"] is None for r in rows)
    csv = client.get(f"/v1/journeys/purchase/{report}",
                     params={**RANGE, "breakdown": "context.utm.source,channel", "format": "csv"})
    frame_csv = pd.read_csv(io.StringIO(csv.text))
    column = "context.utm.source"
    assert column in frame_csv.columns
    assert set(frame_csv[column]) <= {f"src-{c}" for c in cohort.channel}
    bad = client.get(f"/v1/journeys/purchase/{report}",
                     params={**RANGE, "breakdown": "context.x')--"})
    assert bad.status_code == 422 and "context" in bad.json()["detail"]


@pytest.mark.parametrize("report", ["funnel", "abandonment", "detours"])
def test_pagination(api: tuple[TestClient, Any], report: str) -> None:
    client, _ = api
    key = "steps" if report == "funnel" else "rows"
    params = {**RANGE, "breakdown": "hour"}
    full = client.get(f"/v1/journeys/purchase/{report}", params=params).json()
    total = full["total_rows"]
    assert total == len(full[key]) > 10 and full["next_offset"] is None
    got, offset = [], 0
    while offset is not None:
        page = client.get(f"/v1/journeys/purchase/{report}",
                          params={**params, "limit": 7, "offset": offset}).json()
        assert page["total_rows"] == total and len(page[key]) <= 7
        got.extend(page[key])
        offset = page["next_offset"]
    assert got == full[key]
    beyond = client.get(f"/v1/journeys/purchase/{report}",
                        params={**params, "offset": total + 5}).json()
    assert beyond[key] == [] and beyond["next_offset"] is None
    assert client.get(f"/v1/journeys/purchase/{report}",
                      params={"limit": 0}).status_code == 422
    csv = client.get(f"/v1/journeys/purchase/{report}",
                     params={**params, "limit": 1, "format": "csv"})
    assert len(pd.read_csv(io.StringIO(csv.text))) == total  # exports are not paged


@pytest.mark.parametrize("report", ["funnel", "abandonment", "detours", "paths"])
def test_channel_and_date_filters(api: tuple[TestClient, Any], report: str) -> None:
    client, (defs, instances) = api
    df = frame(defs, instances)
    purchase = df[df.journey == "purchase"]
    web = purchase[purchase.channel == "web"]
    day3 = purchase[purchase.day.astype(str) == "2024-01-03"]
    total_key = {"funnel": "opened", "abandonment": "opened"}.get(report)
    only_web = client.get(f"/v1/journeys/purchase/{report}",
                          params={**RANGE, "channel": "web"}).json()
    only_day3 = client.get(f"/v1/journeys/purchase/{report}",
                           params={"from": "2024-01-03", "to": "2024-01-03"}).json()
    assert only_web["channel"] == "web" and only_day3["from"] == "2024-01-03"
    if total_key:
        assert only_web[total_key] == len(web) and only_day3[total_key] == len(day3)
    elif report == "paths":
        assert only_web["abandoned"] == int((web.status == "abandoned").sum())
        assert only_day3["abandoned"] == int((day3.status == "abandoned").sum())
    else:
        assert sum(r["detours"] for r in only_web["rows"]) == int(web.detours.map(len).sum())
        assert sum(r["detours"] for r in only_day3["rows"]) == int(day3.detours.map(len).sum())
    nobody = client.get(f"/v1/journeys/purchase/{report}",
                        params={**RANGE, "channel": "carrier-pigeon"})
    assert nobody.status_code == 200


def test_paths_filters(api: tuple[TestClient, Any]) -> None:
    client, (defs, instances) = api
    df = frame(defs, instances)
    ab = df[(df.journey == "purchase") & (df.status == "abandoned")]
    cart = client.get("/v1/journeys/purchase/paths",
                      params={**RANGE, "dropped_at": "cart", "limit": 1000}).json()
    assert cart["abandoned"] == int((ab.dropped_at == "cart").sum())
    assert {p["dropped_at"] for p in cart["paths"]} <= {"cart"}
    full = client.get("/v1/journeys/purchase/paths",
                      params={**RANGE, "steps_only": "false", "limit": 1000}).json()
    assert full["distinct_paths"] == ab.groupby(["full_path", "dropped_at"]).ngroups
    assert client.get("/v1/journeys/purchase/paths",
                      params={"dropped_at": "nowhere"}).status_code == 422
    assert client.get("/v1/journeys/purchase/paths",
                      params={"breakdown": "channel"}).status_code == 422


def test_other_endpoints(api: tuple[TestClient, Any]) -> None:
    client, (defs, _) = api
    listed = client.get("/v1/journeys").json()
    assert [j["name"] for j in listed["journeys"]] == [j.name for j in defs.journeys]
    sessions = client.get("/v1/reports/sessions", params=RANGE)
    assert sessions.status_code == 200 and sessions.json()["total"] == 0
    alerts = client.get("/v1/alerts", params={"journey": "purchase", "limit": 5}).json()
    assert alerts["alerts"] == [] and alerts["next_offset"] is None
    assert client.get("/v1/alerts/rules").status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200
    page = client.get("/")  # the dashboard: its views, and the assets it loads (no CDN)
    assert page.status_code == 200
    assert all(f'id="v-{v}"' in page.text for v in (
        "scorecard", "funnel", "over-time", "detours", "paths", "ttc", "drivers", "designed",
        "alerts", "customer"))
    assets = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
    assert len(assets) >= 5 and not re.search(r'(?:src|href)="(?:https?:)?//', page.text)
    assert all(client.get("/" + a).status_code == 200 for a in assets)


def test_an_anonymous_id_stitched_to_a_customer_finds_its_journeys(
        api: tuple[TestClient, Any]) -> None:
    client, (_, instances) = api
    customer = instances[0].customer
    wh = client.app.state.journeys.warehouse  # type: ignore[attr-defined]
    write_identity_merges(wh, [{"anonymous_id": "device-42", "customer_id": customer,
                                "merged_at_ms": 1_704_153_600_000, "event_id": "e-link"}])
    direct = client.get(f"/v1/customers/{customer}/journeys").json()
    via = client.get("/v1/customers/device-42/journeys").json()
    assert via["customer_id"] == customer and via["resolved_from"] == "device-42"
    assert via["journeys"] == direct["journeys"] and direct["resolved_from"] is None
    assert client.get("/v1/customers/device-43/journeys").status_code == 404


def test_default_range_ends_at_the_latest_data(api: tuple[TestClient, Any]) -> None:
    """Issue "the product manager's view": a history loaded long ago showed zeros until a
    user found `from`. Without `to`, the range ends at the last day with data."""
    client, (_defs, instances) = api
    last = max(datetime.fromtimestamp(i.opened_at / 1000, UTC).date() for i in instances)
    body = client.get("/v1/journeys/purchase/funnel").json()
    assert (body["from"], body["to"]) == (str(last - timedelta(days=90)), str(last))
    explicit = client.get("/v1/journeys/purchase/funnel",
                          params={"from": body["from"], "to": body["to"]}).json()
    assert body["steps"] == explicit["steps"] and sum(s["instances"] for s in body["steps"])
    sessions = client.get("/v1/reports/sessions").json()  # no sessions here: ends today
    assert sessions["to"] >= str(datetime.now(UTC).date() - timedelta(days=1))
    assert sessions["total"] == 0
