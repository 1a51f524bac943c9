"""OpenAPI examples and documented refusals of the product manager's view (issue #16),
kept apart from api/openapi.py so both stay short."""

from __future__ import annotations

from typing import Any

from pydantic.config import JsonDict

from api.openapi import COHORT_EXAMPLE, PAGE_EXAMPLE, REPORT_RESPONSES, _error

PM_422 = ("; on /dropoff-drivers, a `step` that is not a step of the journey, or its goal "
          "(\"is the goal of journey\")")
"""The rules across parameters the new reports add; tests/integration/
test_api_schemathesis.py DOCUMENTED_422 accepts exactly these."""

PM_RESPONSES: dict[int | str, dict[str, Any]] = {
    **REPORT_RESPONSES,
    422: _error(REPORT_RESPONSES[422]["description"] + PM_422, "InvalidQuery",
                "'purchase' is the goal of journey 'purchase': nobody drops there; ask for "
                "an earlier step"),
}

SCORECARD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: REPORT_RESPONSES[200],
    422: _error("a parameter outside its schema, `from` after `to`, a range longer than "
                "3660 days, or a `version` (the scorecard reads each definition's current "
                "version; `version=` is per journey, on its own reports)", "InvalidQuery",
                "'from' (2024-02-01) is after 'to' (2024-01-01)"),
}

_NO_DIMS: JsonDict = {"channel": None, "day": None, "hour": None, "context": None}
TIME_EXAMPLE: JsonDict = {
    **COHORT_EXAMPLE, "breakdown": [], "total_rows": 6, **PAGE_EXAMPLE,
    "buckets": [{"label": "0-1m", "from_seconds": 0, "to_seconds": 60},
                {"label": "1m-5m", "from_seconds": 60, "to_seconds": 300}],
    "rows": [
        {**_NO_DIMS, "segment": "transition", "from_step": "product_view",
         "to_step": "add_to_cart", "instances": 600, "measured": 600, "same_event": 0,
         "p50_seconds": 95.0, "p90_seconds": 610.0, "mean_seconds": 240.5,
         "histogram": [120, 300, 110, 50, 20, 0, 0, 0, 0]},
        {**_NO_DIMS, "segment": "end_to_end", "from_step": "product_view",
         "to_step": "purchase", "instances": 210, "measured": 210, "same_event": None,
         "p50_seconds": 2700.0, "p90_seconds": 86400.0, "mean_seconds": 21000.0,
         "histogram": [0, 2, 20, 80, 50, 30, 20, 8, 0]},
    ],
}

TREND_EXAMPLE: JsonDict = {
    **COHORT_EXAMPLE, "breakdown": [], "interval": "week", "total_rows": 5, **PAGE_EXAMPLE,
    "rows": [{"period": "2024-01-01", "first_day": "2024-01-01", "last_day": "2024-01-07",
              "partial": False, "channel": None, "context": None, "opened": 240,
              "converted": 50, "abandoned": 170, "open": 20, "conversion_rate": 0.208,
              "abandonment_rate": 0.708}],
}

DRIVERS_EXAMPLE: JsonDict = {
    **COHORT_EXAMPLE, "breakdown": [], "step": "payment_details", "step_index": 4,
    "dropped": 180, "went_on": 210, "drop_rate": 0.46, "features_tested": 23,
    "over_represented": 9,
    "drivers": [{"feature": "last_channel", "value": "app", "dropped_with": 90,
                 "went_on_with": 30, "share_of_dropped": 0.5, "share_of_went_on": 0.143,
                 "drop_rate": 0.75, "lift": 1.63, "p_value": 1.2e-9}],
}

SEQUENCES_EXAMPLE: JsonDict = {
    **COHORT_EXAMPLE, "breakdown": [],
    "designed": ["product_view", "add_to_cart", "cart", "shipping_details", "payment_details",
                 "purchase"],
    "instances": 1000, "truncated": 0, "followed": 720, "followed_share": 0.72,
    "distinct_sequences": 37,
    "by_status": [{"status": "converted", "instances": 210, "truncated": 0, "followed": 150,
                   "followed_share": 0.714}],
    "sequences": [{"sequence": ["product_view"], "designed": True, "instances": 310,
                   "converted": 0, "abandoned": 300, "open": 10, "share": 0.31}],
    "other": {"instances": 420, "distinct_sequences": 36},
}

TYPES_EXAMPLE: JsonDict = {
    **COHORT_EXAMPLE, "breakdown": [], "instances": 1000, "converted": 210, "abandoned": 700,
    "types_found": 4,
    "types": [{"type": "size_guide_view", "in_off_path": False, "events": 260, "instances": 190,
               "share_of_instances": 0.19, "converted_with": 70, "converted_share": 0.333,
               "abandoned_with": 110, "abandoned_share": 0.157,
               "positions": [{"after_step": "product_view", "events": 230, "instances": 170}]}],
}

SCORECARD_EXAMPLE: JsonDict = {
    "from": "2024-01-01", "to": "2024-01-31", "channel": None, "previous_from": "2023-12-01",
    "previous_to": "2023-12-31", "late_events": 0,
    "journeys": [{
        "journey": "purchase", "version": "259f6e2ec60f", "opened": 1000, "converted": 210,
        "abandoned": 700, "open": 90,
        "conversion_rate": 0.21, "abandonment_rate": 0.7, "median_seconds_to_convert": 2700.0,
        "worst_step": "product_view", "worst_step_abandoned": 310, "worst_step_drop_rate": 0.31,
        "alerts_fired": 2, "value_converted": 25830.5, "value_abandoned": 61200.0,
        "converted_with_value": 210, "abandoned_with_value": 540,
        "compare": {"conversion_rate": {"previous": 0.25, "change": -0.04,
                                        "relative_change": -0.16, "p_value": 0.031}},
    }],
}
