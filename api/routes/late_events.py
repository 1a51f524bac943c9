"""Late events: what the figures leave out, and why (docs/semantics.md "Event time").

An event older than its source partition's watermark when it arrives is kept in the
raw table but not applied to sessions and journeys (a replay re-applies it). Every
journey report carries `late_events` for its range; this endpoint breaks them down by
stage and source partition and lists the most recent ones.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api.deps import ApiState, state
from api.params import IsoDate
from journeys.timeutil import ms_to_datetime
from warehouse.queries import late_events

router = APIRouter(prefix="/v1", tags=["late events"])


class LateSource(BaseModel):
    stage: str = Field(description="validate: older than its raw partition's watermark; "
                       "customers: older than what its customer was already settled to")
    topic: str
    partition: int
    count: int
    oldest: datetime
    newest: datetime


class LateEventOut(BaseModel):
    event_id: str
    occurred_at: datetime
    watermark: datetime = Field(description="what it was older than")
    stage: str
    topic: str
    partition: int
    offset: int


class LateEventsOut(BaseModel):
    total: int = Field(description="late events in the range (by their own time)")
    sources: list[LateSource]
    recent: list[LateEventOut]
    note: str


NOTE = ("Late events are kept in the raw touchpoints but left out of sessions, journeys, "
        "detours and alerts; `journeys replay` re-applies them. To avoid them, load history "
        "with `journeys ingest` (it produces in time order) or raise "
        "JOURNEYS_ALLOWED_LATENESS_MS.")


@router.get("/late-events", response_model=LateEventsOut,
            summary="Events left out of the figures because they arrived late")
async def list_late_events(
    st: Annotated[ApiState, Depends(state)],
    date_from: Annotated[IsoDate | None, Query(alias="from", description="first UTC day")] = None,
    date_to: Annotated[IsoDate | None, Query(alias="to", description="last UTC day")] = None,
    limit: Annotated[int, Query(ge=1, le=late_events.MAX_LIMIT)] = 20,
) -> LateEventsOut:
    def run() -> LateEventsOut:
        sources = late_events.counts(st.warehouse, date_from, date_to)
        rows = late_events.recent(st.warehouse, date_from, date_to, limit=limit)
        return LateEventsOut(
            total=sum(s[3] for s in sources),
            sources=[LateSource(stage=s, topic=t, partition=p, count=n,
                                oldest=ms_to_datetime(lo), newest=ms_to_datetime(hi))
                     for s, t, p, n, lo, hi in sources],
            recent=[LateEventOut(event_id=r.event_id, occurred_at=ms_to_datetime(
                r.occurred_at_ms), watermark=ms_to_datetime(r.watermark_ms), stage=r.stage,
                topic=r.kafka_topic, partition=r.kafka_partition, offset=r.kafka_offset)
                for r in rows],
            note=NOTE)

    return await to_thread.run_sync(run)
