"""Report endpoints over the warehouse (blocking queries run in a worker thread)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api.deps import ApiState, state
from api.params import IsoDate, date_range, last_data_day
from warehouse.queries import sessions_per_day
from warehouse.tables import SESSIONS

router = APIRouter(prefix="/v1/reports", tags=["reports"])


class SessionsRow(BaseModel):
    day: date
    channel: str
    sessions: int


class SessionsReport(BaseModel):
    date_from: date = Field(serialization_alias="from", description="first day (the range used)")
    date_to: date = Field(serialization_alias="to", description="last day (the range used)")
    rows: list[SessionsRow]
    total: int


@router.get(
    "/sessions",
    response_model=SessionsReport,
    summary="Sessions per day per channel (channel of the session's first event)",
)
async def sessions_report(
    st: Annotated[ApiState, Depends(state)],
    date_from: Annotated[IsoDate | None,
                         Query(alias="from", description="first day (incl.)")] = None,
    date_to: Annotated[IsoDate | None, Query(alias="to", description="last day (incl.)")] = None,
    channel: Annotated[str | None, Query(max_length=32)] = None,
) -> SessionsReport:
    last = await last_data_day(st, SESSIONS.name) if date_to is None else None
    lo, hi = date_range(date_from, date_to, last)
    rows = await to_thread.run_sync(
        lambda: sessions_per_day.run(st.warehouse, date_from=lo, date_to=hi, channel=channel)
    )
    out = [SessionsRow(day=r[0], channel=r[1], sessions=int(r[2])) for r in rows]
    return SessionsReport(date_from=lo, date_to=hi, rows=out,
                          total=sum(r.sessions for r in out))
