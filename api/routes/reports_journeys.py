"""Journey reports (funnel, abandonment, detours, paths) and a customer's journeys.

Each handler validates by building its SQL first (bad breakdown/date/limit -> 422
before any I/O), then runs the blocking query in a worker thread. `format=csv` returns
all the report's rows as text/csv (pandas, an export: not paged); JSON adds the totals
around one page of rows (`limit`/`offset`; grouped reports grow with day/hour/context
breakdowns). Response models: api/routes/report_models.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Annotated, Any, Literal, TypeVar

import pandas as pd
from anyio import to_thread
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from api.deps import ApiState, state
from api.openapi import BREAKDOWN_EXAMPLES, REPORT_RESPONSES
from api.params import IsoDate, breakdown_query, date_range, last_data_day
from api.routes.report_models import (
    AbandonmentGroup,
    AbandonmentOut,
    CustomerJourneyOut,
    CustomerJourneysOut,
    DetourGroup,
    DetourOut,
    DetourShareOut,
    DetoursOut,
    FunnelOut,
    FunnelStep,
    OtherPaths,
    PathOut,
    PathsOut,
    TouchOut,
)
from api.versions import VersionQuery, at_version, current
from journeys.definitions import JourneyDefinition
from journeys.errors import InvalidQuery, NotFound
from journeys.timeutil import ms_to_datetime
from journeys.versions import shown_version
from warehouse.queries import (
    abandonment,
    customer_journeys,
    detours,
    funnel,
    identity,
    late_events,
    paths,
)
from warehouse.tables import JOURNEY_INSTANCES

router = APIRouter(prefix="/v1", tags=["reports"])

Format = Literal["json", "csv"]
_NAME = Path(pattern=r"^[A-Za-z0-9_\-]{1,64}$", description="journey definition name",
             examples=["purchase"])
MAX_ROWS = 10_000
T = TypeVar("T")


def _breakdown(values: list[str] | None) -> list[str] | None:
    """Repeated `breakdown=` and comma-separated lists are both accepted."""
    if values is None:
        return None
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def _csv(df: pd.DataFrame, name: str) -> Response:
    return Response(df.to_csv(index=False), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


class _Request:
    """The cohort parameters every report takes, resolved and checked."""

    def __init__(self, st: ApiState, name: str, date_from: date | None, date_to: date | None,
                 channel: str | None, breakdown: list[str] | None,
                 last_day: date | None = None, version: str | None = None) -> None:
        # 404 if unknown; the version the queries select (api.versions)
        self.definition: JourneyDefinition = at_version(st.definitions.get(name), version)
        self.lo, self.hi = date_range(date_from, date_to, last_day)
        self.channel = channel
        self.breakdown = _breakdown(breakdown)
        self.wh = st.warehouse

    def kw(self) -> dict[str, Any]:
        return {"date_from": self.lo, "date_to": self.hi, "channel": self.channel}

    async def cohort(self, default: tuple[str, ...] = ()) -> dict[str, Any]:
        """The report's cohort fields, and how many events of its days arrived late (left
        out of every figure: a report must say so, docs/semantics.md "Event time")."""
        late = await to_thread.run_sync(lambda: late_events.total(self.wh, self.lo, self.hi))
        return {"journey": self.definition.name,
                "version": shown_version(self.definition.version),
                "date_from": self.lo, "date_to": self.hi,
                "channel": self.channel,
                "breakdown": list(default if self.breakdown is None else self.breakdown),
                "late_events": late}


async def _common(
    st: Annotated[ApiState, Depends(state)],
    name: Annotated[str, _NAME],
    date_from: Annotated[IsoDate | None, Query(alias="from", description="first UTC day opened (incl.)")] = None,  # noqa: E501
    date_to: Annotated[IsoDate | None, Query(alias="to", description="last UTC day opened (incl.)")] = None,  # noqa: E501
    channel: Annotated[str | None, Query(max_length=32, description="entry channel")] = None,
    version: VersionQuery = None,
) -> _Request:
    last = await last_data_day(st, JOURNEY_INSTANCES.name) if date_to is None else None
    return _Request(st, name, date_from, date_to, channel, None, last, version)


_DIMS = ("dimensions, repeated or comma-separated: channel, day or hour, context.<key> (a "
         "context field of the opening event, up to 2)")
FunnelBreakdown = breakdown_query(funnel.ALLOWED, _DIMS, BREAKDOWN_EXAMPLES)
AbandonmentBreakdown = breakdown_query(abandonment.ALLOWED, _DIMS + ", step",
                                       BREAKDOWN_EXAMPLES)
DetoursBreakdown = breakdown_query(detours.ALLOWED, _DIMS + ", step, detour_channel",
                                   BREAKDOWN_EXAMPLES)


Common = Annotated[_Request, Depends(_common)]
FormatQ = Annotated[Format, Query(description="json (default) or csv (all rows, unpaged)")]
LimitQ = Annotated[int, Query(ge=1, le=MAX_ROWS, description="rows per page (JSON)")]
OffsetQ = Annotated[int, Query(ge=0, le=1_000_000, description="first row of the page")]


def _page(rows: Sequence[T], limit: int, offset: int) -> tuple[list[T], dict[str, Any]]:
    """One page of rows and the page fields of the response."""
    nxt = offset + limit
    return list(rows[offset:nxt]), {"total_rows": len(rows), "limit": limit, "offset": offset,
                                    "next_offset": nxt if nxt < len(rows) else None}


@router.get("/journeys/{name}/funnel", response_model=FunnelOut, responses=REPORT_RESPONSES,
            summary="Instances reaching each step; conversion = converted / opened")
async def funnel_report(req: Common, breakdown: FunnelBreakdown = None, format: FormatQ = "json",
        limit: LimitQ = 1000, offset: OffsetQ = 0) -> Any:
    req.breakdown = _breakdown(breakdown)
    d, kw = req.definition, req.kw()
    funnel.build(req.wh.database, d, breakdown=req.breakdown, **kw)
    rows, t = await to_thread.run_sync(
        lambda: funnel.run(req.wh, d, breakdown=req.breakdown, **kw))
    if format == "csv":
        return _csv(funnel.to_frame(rows, req.breakdown), f"{d.name}-funnel")
    page, fields = _page(rows, limit, offset)
    return FunnelOut(**await req.cohort(), **t._asdict(), **fields,
                     steps=[FunnelStep(**r._asdict()) for r in page])


@router.get("/journeys/{name}/abandonment", response_model=AbandonmentOut,
            responses=REPORT_RESPONSES,
            summary="Abandoned instances by the step dropped at, optionally over time")
async def abandonment_report(req: Common, breakdown: AbandonmentBreakdown = None,
        format: FormatQ = "json", limit: LimitQ = 1000, offset: OffsetQ = 0) -> Any:
    req.breakdown = _breakdown(breakdown)
    d, kw = req.definition, req.kw()
    abandonment.build(req.wh.database, d, breakdown=req.breakdown, **kw)
    rows, t = await to_thread.run_sync(
        lambda: abandonment.run(req.wh, d, breakdown=req.breakdown, **kw))
    if format == "csv":
        return _csv(abandonment.to_frame(rows, req.breakdown), f"{d.name}-abandonment")
    page, fields = _page(rows, limit, offset)
    return AbandonmentOut(**await req.cohort(abandonment.DEFAULT), **t._asdict(), **fields,
                          rows=[AbandonmentGroup(**r._asdict()) for r in page])


@router.get("/journeys/{name}/detours", response_model=DetoursOut, responses=REPORT_RESPONSES,
            summary="Detours by kind and step; share of abandoned instances with each kind")
async def detours_report(req: Common, breakdown: DetoursBreakdown = None, format: FormatQ = "json",
        limit: LimitQ = 1000, offset: OffsetQ = 0) -> Any:
    req.breakdown = _breakdown(breakdown)
    d, kw = req.definition, req.kw()
    detours.build(req.wh.database, d, breakdown=req.breakdown, **kw)
    rows, shares = await to_thread.run_sync(
        lambda: detours.run(req.wh, d, breakdown=req.breakdown, **kw))
    if format == "csv":
        return _csv(detours.to_frame(rows, req.breakdown), f"{d.name}-detours")
    page, fields = _page(rows, limit, offset)
    return DetoursOut(**await req.cohort(detours.DEFAULT), **fields,
                      rows=[DetourGroup(**r._asdict()) for r in page],
                      shares=[DetourShareOut(**s._asdict()) for s in shares])


@router.get("/journeys/{name}/paths", response_model=PathsOut, responses=REPORT_RESPONSES,
            summary="Exact counts of abandoned instances' paths, with an explicit 'other'")
async def paths_report(
    request: Request,
    req: Common,
    format: FormatQ = "json",
    limit: Annotated[int, Query(ge=1, le=paths.MAX_LIMIT,
                                description="paths listed; the rest is in `other`")] = 20,
    dropped_at: Annotated[str | None, Query(max_length=64, description="only this step")] = None,
    steps_only: Annotated[bool, Query(description="keep only step event types")] = True,
) -> Any:
    d = req.definition
    if "breakdown" in request.query_params:
        raise InvalidQuery("the paths report takes no breakdown; filter with dropped_at")
    kw = {**req.kw(), "dropped_at": dropped_at, "steps_only": steps_only}
    paths.build(req.wh.database, d, limit=limit, **kw)
    rows, s = await to_thread.run_sync(lambda: paths.run(req.wh, d, limit=limit, **kw))
    if format == "csv":
        return _csv(paths.to_frame(rows, s), f"{d.name}-paths")
    return PathsOut(
        **await req.cohort(), steps_only=steps_only, abandoned=s.abandoned,
        distinct_paths=s.distinct_paths,
        paths=[PathOut(path=list(r.path), dropped_at=r.dropped_at, instances=r.instances,
                       share=r.share) for r in rows],
        other=OtherPaths(instances=s.other_instances, distinct_paths=s.other_paths),
    )


def _journey_out(r: customer_journeys.CustomerJourneyRow) -> CustomerJourneyOut:
    return CustomerJourneyOut(
        instance_id=r.instance_id, journey=r.journey, status=r.status,  # type: ignore[arg-type]
        opened_at=ms_to_datetime(r.opened_at_ms),
        closed_at=ms_to_datetime(r.closed_at_ms) if r.closed_at_ms else None,
        last_event_at=ms_to_datetime(r.last_event_at_ms),
        furthest_step=r.furthest_step_name, furthest_step_index=r.furthest_step,
        dropped_at=r.dropped_at or None, entry_channel=r.entry_channel, channels=r.channels,
        events=r.events, path_truncated=r.path_truncated,
        definition_version=shown_version(r.definition_version),
        path=[TouchOut(type=t, channel=c, at=ms_to_datetime(ms)) for t, c, ms in
              zip(r.path_types, r.path_channels, r.path_times, strict=True)],
        detours=[DetourOut(kind=k, step=s, channel=c, at=ms_to_datetime(ms)) for k, s, c, ms in
                 zip(r.detour_kinds, r.detour_steps, r.detour_channels, r.detour_times,
                     strict=True)],
    )


@router.get("/customers/{customer_id}/journeys", response_model=CustomerJourneysOut,
            tags=["customers"], summary="A customer's journey instances with their paths",
            responses={404: REPORT_RESPONSES[404] | {
                "description": "no instance recorded for the customer, or unknown journey"},
                422: REPORT_RESPONSES[422]})
async def customer_journeys_report(
    st: Annotated[ApiState, Depends(state)],
    customer_id: Annotated[str, Path(min_length=1, max_length=128, examples=["c-1842"],
                                     description="the stitched customer key")],
    journey: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=customer_journeys.MAX_LIMIT)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    version: VersionQuery = None,
) -> CustomerJourneysOut:
    versions = current(st.definitions)
    if journey is not None:  # 404 for an unknown definition
        versions = [(journey, at_version(st.definitions.get(journey), version).version)]
    elif version is not None:
        raise InvalidQuery("'version' needs 'journey': versions are per definition")
    customer_journeys.build(st.warehouse.database, customer_id, journey=journey, limit=limit,
                            offset=offset, versions=versions)

    def lookup() -> tuple[str, list[customer_journeys.CustomerJourneyRow], int]:
        """The customer's page; for an anonymous id stitched to a customer, that one's."""
        rows, total = customer_journeys.run(st.warehouse, customer_id, journey=journey,
                                            limit=limit, offset=offset, versions=versions)
        if total == 0:
            linked = identity.resolve(st.warehouse, customer_id)
            if linked is not None and linked != customer_id:
                return linked, *customer_journeys.run(st.warehouse, linked, journey=journey,
                                                      limit=limit, offset=offset,
                                                      versions=versions)
        return customer_id, rows, total

    key, rows, total = await to_thread.run_sync(lookup)
    if total == 0:
        raise NotFound(f"no journeys recorded for customer {customer_id!r}")
    nxt = offset + len(rows)
    return CustomerJourneysOut(customer_id=key, journeys=[_journey_out(r) for r in rows],
                               resolved_from=customer_id if key != customer_id else None,
                               total=total, limit=limit, offset=offset,
                               next_offset=nxt if nxt < total else None)
