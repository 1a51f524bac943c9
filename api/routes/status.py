"""What the warehouse holds, for operators: `journeys status` and `journeys ingest
--wait` ask here when the warehouse is the embedded engine of a running `journeys up`
(chdb lets only that process open it); against a ClickHouse server they query it
directly (warehouse.queries.status, docs/operations.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field, StringConstraints

from api.deps import ApiState, state
from warehouse.queries import status as queries

router = APIRouter(prefix="/v1", tags=["operations"])

_RANGE = r"^[0-9]{1,5}:[0-9]{1,18}-[0-9]{1,18}$"
_TOPIC = r"^[A-Za-z0-9._\-]{1,249}$"
_Range = Annotated[str, StringConstraints(pattern=_RANGE)]
_MAX_MS = 4_294_967_295_000  # the last second a ClickHouse DateTime holds


class TableOut(BaseModel):
    table: str
    rows: int = Field(description="rows in active parts (versions not merged away count)")
    last_part_at: datetime | None = Field(description="when the newest active part was "
                                          "written (an insert or a merge)")


class StageCountOut(BaseModel):
    stage: str
    count: int


class WarehouseStatusOut(BaseModel):
    tables: list[TableOut]
    newest_raw_at: datetime | None = Field(description="when the newest raw touchpoint "
                                           "row was written")
    late: list[StageCountOut] = Field(description="late events per stage")
    dead_letters: list[StageCountOut] = Field(description="dead letters per stage")


class RunCountsOut(BaseModel):
    late: int = Field(description="records of the ranges the validate stage found late")
    dead: int = Field(description="records of the ranges the validate stage dead-lettered")
    late_customers: int = Field(description="late events of the customer stage detected "
                                "since `since_ms`, from any source")


@router.get("/status", response_model=WarehouseStatusOut,
            summary="Rows, last writes, late events and dead letters in the warehouse")
async def warehouse_status(st: Annotated[ApiState, Depends(state)]) -> WarehouseStatusOut:
    found = await to_thread.run_sync(queries.warehouse_status, st.warehouse)
    return WarehouseStatusOut(
        tables=[TableOut(table=t.table, rows=t.rows, last_part_at=t.last_part_at)
                for t in found.tables],
        newest_raw_at=found.newest_raw_at,
        late=[StageCountOut(stage=c.stage, count=c.count) for c in found.late],
        dead_letters=[StageCountOut(stage=c.stage, count=c.count) for c in found.dead_letters])


@router.get("/status/run", response_model=RunCountsOut,
            summary="Late and dead-lettered records among raw-topic offset ranges")
async def run_counts(
    st: Annotated[ApiState, Depends(state)],
    topic: Annotated[str, Query(pattern=_TOPIC, description="the raw topic")],
    ranges: Annotated[list[_Range], Query(
        alias="range", max_length=queries.MAX_RANGES,
        description="PARTITION:START-END (END exclusive), repeated")] = [],  # noqa: B006
    since_ms: Annotated[int, Query(ge=0, le=_MAX_MS, description="epoch ms: count the "
                                   "customer stage's late events detected since")] = 0,
) -> RunCountsOut:
    parsed = []
    for text in ranges:
        partition, _, span = text.partition(":")
        start, _, end = span.partition("-")
        parsed.append(queries.OffsetRange(int(partition), int(start), int(end)))
    since = datetime.fromtimestamp(since_ms / 1000, UTC)
    counts = await to_thread.run_sync(
        lambda: queries.run_counts(st.warehouse, topic, parsed, since))
    return RunCountsOut(**counts)
