"""`GET /v1/customers?q=<prefix>`: find customers by the start of their id or of a linked
anonymous id (scope `read`, unlike `DELETE /v1/customers/{id}`); the dashboard's
customer lookup searches with it. Query: warehouse/queries/customer_search.py;
docs/reports.md "Customer search".
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from api.deps import ApiState, state
from api.openapi import REPORT_RESPONSES
from api.versions import VersionQuery, read_versions
from journeys.timeutil import ms_to_datetime
from journeys.versions import shown_version
from warehouse.queries import customer_search

router = APIRouter(prefix="/v1", tags=["customers"])

EXAMPLE: JsonDict = {
    "q": "c-18", "journey": None, "versions": {"purchase": "259f6e2ec60f"}, "limit": 20,
    "more": False,
    "customers": [{
        "customer_id": "c-1842", "matched_by": "customer_id", "matched_anonymous_ids": [],
        "anonymous_ids": ["anon-7f3a", "anon-9c01"], "anonymous_id_count": 2, "journeys": 3,
        "converted": 1, "abandoned": 1, "open": 1,
        "first_opened_at": "2024-03-01T09:12:00Z", "last_seen_at": "2024-03-09T18:40:05Z"}],
}


class CustomerHitOut(BaseModel):
    customer_id: str = Field(description="the stitched customer key (GET /v1/customers/{id}/"
                             "journeys takes it)")
    matched_by: str = Field(description="`customer_id`: the key starts with q; "
                            "`anonymous_id`: a linked anonymous id does")
    matched_anonymous_ids: list[str] = Field(description="linked anonymous ids starting "
                                             "with q")
    anonymous_ids: list[str] = Field(description="anonymous ids linked to the customer, the "
                                     f"first {customer_search.LINKED_SHOWN} by id")
    anonymous_id_count: int = Field(description="all anonymous ids linked to it")
    journeys: int = Field(description="journey instances (of the versions read)")
    converted: int
    abandoned: int
    open: int
    first_opened_at: datetime | None = Field(description="null: no instance")
    last_seen_at: datetime | None = Field(description="the latest event of its instances")


class CustomersOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    q: str
    journey: str | None
    versions: dict[str, str] = Field(description="journey -> the definition version counted")
    limit: int
    more: bool = Field(description="more customers match: type more of the id")
    customers: list[CustomerHitOut] = Field(description="by customer id (bytes order)")


@router.get("/customers", response_model=CustomersOut, summary="Find customers by id prefix",
            responses={404: REPORT_RESPONSES[404], 422: REPORT_RESPONSES[422]})
async def search_customers(
    st: Annotated[ApiState, Depends(state)],
    q: Annotated[str, Query(min_length=1, max_length=customer_search.MAX_PREFIX,
                            examples=["c-18"], description="the start of a customer id or of "
                            "a linked anonymous id (case-sensitive)")],
    limit: Annotated[int, Query(ge=1, le=customer_search.MAX_LIMIT,
                                description="customers listed")] = 20,
    journey: Annotated[str | None, Query(max_length=64, description="count this "
                                         "journey's instances only (default: all)")] = None,
    version: VersionQuery = None,
) -> CustomersOut:
    versions = read_versions(st.definitions, journey, version)
    customer_search.build_by_id(st.warehouse.database, q, versions=versions, limit=limit)
    hits, more = await to_thread.run_sync(
        lambda: customer_search.run(st.warehouse, q, versions=versions, limit=limit))
    return CustomersOut(
        q=q, journey=journey, versions={k: shown_version(v) for k, v in versions}, limit=limit,
        more=more, customers=[CustomerHitOut(
            **{k: v for k, v in h._asdict().items() if not k.endswith("_ms")},
            first_opened_at=None if h.first_opened_at_ms is None
            else ms_to_datetime(h.first_opened_at_ms),
            last_seen_at=None if h.last_seen_at_ms is None
            else ms_to_datetime(h.last_seen_at_ms)) for h in hits])
