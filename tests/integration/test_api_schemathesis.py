"""Schemathesis fuzzes every operation of the OpenAPI spec against the real app over a
real warehouse holding the reference journeys (both engines) with all its checks: no
request, however odd, may produce a 5xx; every status code, content type, header and
body is documented; schema-valid requests are accepted and invalid ones rejected."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from journeys.definitions import load_definitions
from journeys.settings import ApiSettings
from tests.integration.journey_report_support import loaded, open_warehouse

_COUNT = iter(range(1_000_000))
# Deterministic and quick by default; JOURNEYS_FUZZ_EXAMPLES=500 fuzzes deeper, at random.
_DEEP = os.environ.get("JOURNEYS_FUZZ_EXAMPLES")
EXAMPLES = int(_DEEP or 40)
KEY = "fuzz-key-0123456789abcdef"
# The rules across parameters that a schema cannot state, each documented in the 422 of
# api/openapi.py REPORT_RESPONSES and ALERTS_422 (and api/openapi_pm.py PM_RESPONSES): the
# only refusals a schema-valid request may get.
DOCUMENTED_422 = re.compile(
    r"is after 'to'|is longer than \d+ days|breakdown repeats a dimension|both 'day' and "
    r"'hour'|at most \d+ context breakdowns|is not a step of journey|takes no breakdown|"
    r"cannot be combined with a '(day|hour)' breakdown|no previous period|is the goal of "
    r"journey|needs 'journey'")


def only_documented_refusals(ctx: Any, response: Any, case: Any) -> None:
    """schemathesis' positive_data_acceptance, except for the documented 422s above."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code < 400:
        return
    detail = str(response.json().get("detail")) if response.status_code == 422 else ""
    assert response.status_code in (401, 403, 404) or DOCUMENTED_422.search(detail), (
        f"schema-valid request refused with {response.status_code}: {response.text[:300]}")


@pytest.fixture(scope="module", params=["server", "chdb"])
def api_schema(request: pytest.FixtureRequest, run_id: str) -> Iterator[Any]:
    config = open_warehouse(request, request.param, f"fuzz_{run_id}_{next(_COUNT)}")
    for wh, defs, _ in loaded(config):
        # keys configured, as in production: the auth checks see 401 without one
        settings = ApiSettings(warehouse=config, api_keys={
            "fuzz": {"key": KEY, "scopes": ["read", "metrics"]}})
        app = create_app(settings, warehouse=wh, definitions=defs)
        with TestClient(app):  # runs the lifespan: the app state stays set meanwhile
            yield schemathesis.openapi.from_asgi("/openapi.json", app)


def _operations() -> list[str]:
    """`METHOD path` of every documented operation (ids for parametrize)."""
    app = create_app(ApiSettings(), definitions=load_definitions())
    return [f"{m.upper()} {p}" for p, ops in app.openapi()["paths"].items() for m in ops]


# Driven by hand rather than schemathesis' pytest plugin, whose lazy fixture loading
# fails on pytest 9 (`Function._nodeid`); one test per operation, hypothesis inside.
@pytest.mark.parametrize("operation", _operations())
def test_no_server_errors(api_schema: Any, operation: str) -> None:
    method, path = operation.split(" ", 1)
    op = api_schema[path][method]

    @given(case=op.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=not _DEEP,
              suppress_health_check=list(HealthCheck))
    def fuzz(case: Any) -> None:
        # explicit auth: the auth checks take it away or spoil it and expect a 401
        case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"},  # every check
                               excluded_checks=[positive_data_acceptance],
                               additional_checks=[only_documented_refusals])

    fuzz()
