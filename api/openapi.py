"""What the OpenAPI document says beyond the routes: description, tags, error shapes
and examples, kept here so route modules stay about behaviour."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from pydantic.config import JsonDict

DESCRIPTION = """\
Funnels, abandonment, detours, paths and drop-off alerts computed from customer
touchpoints in real time. All report times are event times (UTC); `from`/`to` select the
cohort of journey instances **opened** on those UTC days.

**Auth.** When API keys are configured (`JOURNEYS_API_KEYS`), every `/v1` endpoint needs
a key with the `read` scope, and `/metrics` one with `metrics`: send
`Authorization: Bearer <key>` or `X-API-Key: <key>`. No key or an unknown one → 401; a
key without the scope → 403. With no keys configured (the local default) the API is open.

**Definition versions.** Every report of a journey (tags "reports" and "product
manager") reads the rows of one version of its definition: the current one, or the one
`version=` names (`GET /v1/journeys` lists the stored ones; `unversioned`: rows written
before versions). Each response echoes the `version` it read; `compare=previous` compares
the same version. The scorecard reads every definition at its current version.

**Errors** are JSON `{"error": kind, "detail": message}`; bad input is a 4xx, never a 500.
"""

TAGS = [
    {"name": "reports", "description": "Funnel, abandonment, detours and paths of a journey "
     "at one definition version (`version=`, default the current one); JSON or "
     "`format=csv`."},
    {"name": "product manager", "description": "Time to convert, trends, drop-off drivers, "
     "designed vs actual order (each at one definition version: `version=`), and the "
     "scorecard of every journey (current versions); JSON or `format=csv`."},
    {"name": "customers", "description": "One customer's journey instances with their paths."},
    {"name": "journeys", "description": "The journey definitions every number is computed with."},
    {"name": "alerts", "description": "Drop-off alert history and rules."},
    {"name": "late events", "description": "Events left out of the figures because they "
     "arrived late, by source, with the most recent ones."},
    {"name": "operations", "description": "Liveness, readiness and Prometheus metrics."},
]


class ErrorOut(BaseModel):
    """Every error response."""

    error: str = Field(description="the kind of error", examples=["InvalidQuery"])
    detail: Any = Field(description="what is wrong, for a human",
                        examples=["unknown breakdown 'country'; allowed: step, channel, day, "
                                  "hour, context.<key>"])


def _error(description: str, kind: str, detail: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description,
            "content": {"application/json": {"example": {"error": kind, "detail": detail}}}}


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _error("no API key, or an unknown one (only when keys are configured)",
                "Unauthenticated", "an API key is required: send 'Authorization: Bearer "
                "<key>' or 'X-API-Key'"),
    403: _error("the API key lacks the scope this endpoint needs", "Forbidden",
                "API key 'grafana' lacks the 'read' scope"),
}

BAD_INPUT: dict[int | str, dict[str, Any]] = {
    422: _error("bad input: parameters that fail validation or cannot be answered",
                "InvalidQuery", "'from' (2024-02-01) is after 'to' (2024-01-01)"),
}
"""Replaces FastAPI's default 422 schema: our errors are always ErrorOut."""

REPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"},
                                   "example": "step,abandoned,share_of_abandoned\n"
                                              "cart,120,0.4\npayment_details,180,0.6\n"}},
          "description": "the report (JSON), or its rows as CSV with `format=csv`"},
    404: _error("unknown journey definition", "DefinitionNotFound",
                "no journey definition named 'checkout'"),
    422: _error("a parameter outside its schema (dates outside 1970..2105 or not ISO text, a "
                "breakdown name the report does not take, a `version` not matching "
                "`[A-Za-z0-9_.-]{1,40}`, ...), or one of the rules across "
                "parameters the schema cannot state: `from` after `to`; a range longer than "
                "3660 days; a breakdown that repeats a name, has both `day` and `hour`, or "
                "more than two `context.<key>`; on /paths, a `dropped_at` that is not a step "
                "of the journey, or any `breakdown`; with `compare=previous`, a `day` or "
                "`hour` breakdown (\"cannot be combined\") or `from` = 1970-01-01 (\"no "
                "previous period\"); on /v1/customers/{customer_id}/journeys, `version` "
                "without `journey` (\"needs 'journey'\")", "InvalidQuery",
                "'from' (2024-02-01) is after 'to' (2024-01-01)"),
}

ALERTS_422 = _error("a parameter outside its schema, `from` after `to` (`from` equal to "
                    "`to` is an empty range: no alerts), or `version` without `journey` "
                    "(\"needs 'journey'\": versions are per definition)", "InvalidQuery",
                    "'from' (2024-02-01T00:00:00.000Z) is after 'to' (2024-01-01T00:00:00.000Z)")

NOT_FOUND_ALERT = _error("no alert or recovery notice with this id", "NotFound",
                         "no alert '0123456789abcdef01234567'")

COHORT_EXAMPLE: JsonDict = {"journey": "purchase", "version": "259f6e2ec60f", "from": "2024-01-01",
                  "to": "2024-01-31", "channel": None}
PAGE_EXAMPLE: JsonDict = {"limit": 1000, "offset": 0, "next_offset": None}

FUNNEL_EXAMPLE: JsonDict = {
    **COHORT_EXAMPLE, "breakdown": ["channel"], "opened": 1000, "converted": 210,
    "abandoned": 700, "open": 90, "conversion_rate": 0.21, "total_rows": 2, **PAGE_EXAMPLE,
    "steps": [
        {"channel": "web", "day": None, "hour": None, "context": None, "step": "product_view",
         "step_index": 0, "instances": 1000, "converted": 210, "dropped_here": 310,
         "share_of_opened": 1.0},
        {"channel": "web", "day": None, "hour": None, "context": None, "step": "add_to_cart",
         "step_index": 1, "instances": 600, "converted": 210, "dropped_here": 150,
         "share_of_opened": 0.6},
    ],
}

ABANDONMENT_EXAMPLE: JsonDict = {
    **COHORT_EXAMPLE, "breakdown": ["step", "context.country"], "opened": 1000,
    "abandoned": 700, "converted": 210, "open": 90, "abandonment_rate": 0.7, "total_rows": 2,
    **PAGE_EXAMPLE,
    "rows": [
        {"step": "cart", "channel": None, "day": None, "hour": None,
         "context": {"country": "DE"}, "abandoned": 120, "share_of_abandoned": 0.171},
        {"step": "payment_details", "channel": None, "day": None, "hour": None,
         "context": {"country": None}, "abandoned": 80, "share_of_abandoned": 0.114},
    ],
}

DETOURS_EXAMPLE: JsonDict = {
    **COHORT_EXAMPLE, "breakdown": ["step"], "total_rows": 1, **PAGE_EXAMPLE,
    "rows": [{"kind": "channel_switch", "step": "payment_details", "detour_channel": None,
              "channel": None, "day": None, "hour": None, "context": None, "detours": 95,
              "instances": 80}],
    "shares": [{"kind": "channel_switch", "abandoned_with": 60, "abandoned": 700,
                "abandoned_share": 0.086, "converted_with": 20, "converted": 210,
                "converted_share": 0.095}],
}

PATHS_EXAMPLE: JsonDict = {
    **COHORT_EXAMPLE, "breakdown": [], "steps_only": True, "abandoned": 700,
    "distinct_paths": 41,
    "paths": [{"path": ["product_view", "add_to_cart", "cart"], "dropped_at": "cart",
               "instances": 120, "share": 0.171}],
    "other": {"instances": 580, "distinct_paths": 40},
}

CUSTOMER_EXAMPLE: JsonDict = {
    "customer_id": "c-1842", "resolved_from": None, "total": 3, "limit": 1, "offset": 0,
    "next_offset": 1,
    "journeys": [{
        "instance_id": "5f1c0e9a2b7d44c18e3a9b10", "journey": "purchase", "status": "abandoned",
        "opened_at": "2024-01-02T10:00:00Z", "closed_at": "2024-01-03T10:05:00Z",
        "last_event_at": "2024-01-02T10:05:00Z", "furthest_step": "cart",
        "furthest_step_index": 2, "dropped_at": "cart", "entry_channel": "web",
        "channels": ["web", "app"], "events": 3, "path_truncated": False,
        "definition_version": "259f6e2ec60f",
        "path": [{"type": "product_view", "channel": "web", "at": "2024-01-02T10:00:00Z"},
                 {"type": "add_to_cart", "channel": "app", "at": "2024-01-02T10:03:00Z"},
                 {"type": "cart", "channel": "app", "at": "2024-01-02T10:05:00Z"}],
        "detours": [{"kind": "channel_switch", "step": "product_view", "channel": "app",
                     "at": "2024-01-02T10:03:00Z"}],
    }],
}

BREAKDOWN_EXAMPLES: dict[str, Any] = {
    "none": {"summary": "no breakdown (the report's default)", "value": None},
    "channel": {"summary": "by entry channel", "value": ["channel"]},
    "per_day": {"summary": "per UTC day opened (abandonment/detours also take step)",
                "value": ["day"]},
    "context": {"summary": "by a context field of the opening event",
                "value": ["context.country"]},
}
