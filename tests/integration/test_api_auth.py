"""API keys over the real app and a real warehouse (chdb): every /v1 endpoint needs a
`read` key when keys are configured, /metrics a `metrics` key; keys are never logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from journeys.settings import ApiSettings, WarehouseConfig
from warehouse.connect import connect
from warehouse.schema import migrate

READ = "rk_read_0123456789abcdef"
METRICS = "mk_metrics_0123456789abcdef"
ENDPOINTS = [
    "/v1/journeys",
    "/v1/journeys/purchase/funnel",
    "/v1/journeys/purchase/abandonment",
    "/v1/journeys/purchase/detours",
    "/v1/journeys/purchase/paths",
    "/v1/journeys/purchase/time-to-convert",
    "/v1/journeys/purchase/trend?interval=week",
    "/v1/journeys/purchase/dropoff-drivers?step=cart",
    "/v1/journeys/purchase/sequences",
    "/v1/journeys/purchase/non-step-types",
    "/v1/scorecard",
    "/v1/customers/c1/journeys",
    "/v1/customers?q=c",
    "/v1/alerts",
    "/v1/alerts/rules",
    "/v1/alerts/0123456789abcdef01234567",
    "/v1/reports/sessions",
]


@pytest.fixture(scope="module")
def client(chdb_path: Path, run_id: str) -> Iterator[TestClient]:
    config = WarehouseConfig(backend="chdb", path=chdb_path, database=f"auth_{run_id}")
    settings = ApiSettings(warehouse=config, api_keys={
        "pm": READ, "prom": {"key": METRICS, "scopes": ["metrics"]}})
    wh = connect(config)
    migrate(wh)
    try:
        with TestClient(create_app(settings, warehouse=wh)) as c:
            yield c
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {config.database}")
        wh.close()


@pytest.mark.parametrize("path", ENDPOINTS)
def test_read_endpoints_need_a_read_key(client: TestClient, path: str) -> None:
    missing = client.get(path)
    assert missing.status_code == 401 and missing.json()["error"] == "Unauthenticated"
    assert missing.headers["www-authenticate"] == "Bearer"
    unknown = client.get(path, headers={"Authorization": "Bearer rk_not_a_configured_key"})
    assert unknown.status_code == 401 and unknown.json()["detail"] == "unknown API key"
    wrong = client.get(path, headers={"X-API-Key": METRICS})
    assert wrong.status_code == 403 and "'read' scope" in wrong.json()["detail"]
    for headers in ({"Authorization": f"Bearer {READ}"}, {"X-API-Key": READ}):
        ok = client.get(path, headers=headers)
        assert ok.status_code in (200, 404), ok.text  # 404: no such customer / alert yet
        assert ok.json().get("error") not in ("Unauthenticated", "Forbidden")


def test_csv_exports_need_a_key_too(client: TestClient) -> None:
    path = "/v1/journeys/purchase/abandonment"
    assert client.get(path, params={"format": "csv"}).status_code == 401
    ok = client.get(path, params={"format": "csv"}, headers={"X-API-Key": READ})
    assert ok.status_code == 200 and ok.text.startswith("step,abandoned")


def test_metrics_needs_the_metrics_scope(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": READ}).status_code == 403
    assert client.get("/metrics", headers={"Authorization": f"Bearer {METRICS}"}).status_code == 200


def test_open_endpoints(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/", "/static/dash-core.js", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path
    spec = client.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    funnel = spec["paths"]["/v1/journeys/{name}/funnel"]["get"]
    assert {"401", "403", "404", "422"} <= set(funnel["responses"])


def test_query_string_keys_are_not_accepted(client: TestClient) -> None:
    """A key in the URL would land in access logs: refused like no key at all."""
    for name in ("api_key", "key", "token"):
        assert client.get("/v1/journeys", params={name: READ}).status_code == 401


def test_keys_never_logged_or_echoed(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bodies = []
    for headers in ({"X-API-Key": READ}, {"X-API-Key": METRICS}, {"Authorization": "Bearer x" * 3},
                    {"Authorization": f"Basic {READ}"}):
        for path in ("/v1/journeys", "/metrics", "/v1/journeys/nope/funnel"):
            r = client.get(path, headers=headers)
            bodies.append(r.text)
            assert READ not in str(r.headers) and METRICS not in str(r.headers)
    text = "\n".join(bodies) + "\n".join(rec.getMessage() for rec in caplog.records)
    assert READ not in text and METRICS not in text
    assert READ not in repr(client.app.state.keyring.__dict__)  # type: ignore[attr-defined]


def test_a_good_key_next_to_a_bad_one_is_refused(client: TestClient) -> None:
    both = {"Authorization": f"Bearer {READ}", "X-API-Key": "not-a-key"}
    assert client.get("/v1/journeys", headers=both).status_code == 401
    same = {"Authorization": f"Bearer {READ}", "X-API-Key": READ}
    assert client.get("/v1/journeys", headers=same).status_code == 200
    two = {"Authorization": f"Bearer {READ}", "X-API-Key": METRICS}
    assert client.get("/metrics", headers=two).status_code in (401, 403)
