"""Journey reports (funnel, abandonment, detours, paths) and a customer's journeys.

Each handler validates by building its SQL first (bad breakdown/date/limit -> 422
before any I/O), then runs the blocking query in a worker thread. `format=csv` returns
all the report's rows as text/csv (pandas, an export: not paged); JSON adds the totals
around one page of rows (`limit`/`offset`; grouped reports grow with day/hour/context
breakdowns). Response models: api/routes/report_models.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from anyio import to_thread
from fastapi import APIRouter, Depends, Path, Query, Request

from api.deps import ApiState, state
from api.openapi import BREAKDOWN_EXAMPLES, REPORT_RESPONSES
from api.params import breakdown_query
from api.routes.report_common import (
    Common,
    FormatQ,
    LimitQ,
    OffsetQ,
    Outcome,
    Pairs,
    run_report,
    split_breakdown,
)
from api.routes.report_common import csv_response as _csv
from api.routes.report_models import (
    AbandonmentGroup,
    AbandonmentOut,
    ChangeOut,
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
from api.versions import VersionQuery, read_versions
from journeys.errors import InvalidQuery, NotFound
from journeys.timeutil import ms_to_datetime
from journeys.versions import shown_version
from warehouse.queries import (
    abandonment,
    compare,
    customer_journeys,
    detours,
    funnel,
    identity,
    paths,
)

router = APIRouter(prefix="/v1", tags=["reports"])
CompareQ = Annotated[Literal["previous"] | None, Query(
    alias="compare", description="`previous`: every figure also for the period of the same "
    "length just before `from`, with its change (and a two-proportion p-value for rates); "
    "not with a day or hour breakdown")]


def _changes(c: compare.Compared | None) -> dict[str, ChangeOut] | None:
    return None if c is None else {k: ChangeOut(**v._asdict()) for k, v in c.items()}


_DIMS = ("dimensions, repeated or comma-separated: channel, day or hour, context.<key> (a "
         "context field of the opening event, up to 2)")
if TYPE_CHECKING:  # what FastAPI passes; at run time, Annotated with the schema and docs
    FunnelBreakdown: TypeAlias = list[str] | None
    AbandonmentBreakdown: TypeAlias = list[str] | None
    DetoursBreakdown: TypeAlias = list[str] | None
else:
    FunnelBreakdown = breakdown_query(funnel.ALLOWED, _DIMS, BREAKDOWN_EXAMPLES)
    AbandonmentBreakdown = breakdown_query(abandonment.ALLOWED, _DIMS + ", step",
                                           BREAKDOWN_EXAMPLES)
    DetoursBreakdown = breakdown_query(detours.ALLOWED, _DIMS + ", step, detour_channel",
                                       BREAKDOWN_EXAMPLES)


@router.get("/journeys/{name}/funnel", response_model=FunnelOut, responses=REPORT_RESPONSES,
            summary="Instances reaching each step; conversion = converted / opened")
async def funnel_report(req: Common, breakdown: FunnelBreakdown = None, format: FormatQ = "json",
        limit: LimitQ = 1000, offset: OffsetQ = 0, compare_with: CompareQ = None) -> Any:
    req.breakdown = split_breakdown(breakdown)
    d, dims = req.definition, req.breakdown
    funnel.build(req.wh.database, d, breakdown=dims, **req.kw())
    out: Outcome[Any, compare.Compared | None] = await run_report(
        req, lambda **k: funnel.run(req.wh, d, breakdown=dims, **k),
        how=compare_with,
        paired=lambda now, then: compare.funnel(d, dims, now, then),
        unpaired=lambda now: ([(r, None) for r in now[0]], None))
    if format == "csv":
        return out.csv(lambda rs: funnel.to_frame(rs, dims), ("share_of_opened",),
                       f"{d.name}-funnel")
    chunk, fields = out.page(limit, offset)
    return FunnelOut(**await req.cohort(), **out.result[1]._asdict(), **fields,
                     **out.compare_fields(), totals_compare=_changes(out.extra),
                     steps=[FunnelStep(**r._asdict(), compare=_changes(c)) for r, c in chunk])


@router.get("/journeys/{name}/abandonment", response_model=AbandonmentOut,
            responses=REPORT_RESPONSES,
            summary="Abandoned instances by the step dropped at, optionally over time")
async def abandonment_report(req: Common, breakdown: AbandonmentBreakdown = None,
        format: FormatQ = "json", limit: LimitQ = 1000, offset: OffsetQ = 0,
        compare_with: CompareQ = None) -> Any:
    req.breakdown = split_breakdown(breakdown)
    d, dims = req.definition, req.breakdown
    abandonment.build(req.wh.database, d, breakdown=dims, **req.kw())
    names = list(abandonment.DEFAULT if dims is None else dims)
    out: Outcome[Any, compare.Compared | None] = await run_report(
        req, lambda **k: abandonment.run(req.wh, d, breakdown=dims, **k),
        how=compare_with,
        paired=lambda now, then: compare.abandonment(d, names, now, then),
        unpaired=lambda now: ([(r, None) for r in now[0]], None))
    if format == "csv":
        return out.csv(lambda rs: abandonment.to_frame(rs, dims), ("share_of_abandoned",),
                       f"{d.name}-abandonment")
    chunk, fields = out.page(limit, offset)
    return AbandonmentOut(**await req.cohort(abandonment.DEFAULT), **out.result[1]._asdict(),
                          **fields, **out.compare_fields(), totals_compare=_changes(out.extra),
                          rows=[AbandonmentGroup(**r._asdict(), compare=_changes(c))
                                for r, c in chunk])


@router.get("/journeys/{name}/detours", response_model=DetoursOut, responses=REPORT_RESPONSES,
            summary="Detours by kind and step; share of abandoned instances with each kind")
async def detours_report(req: Common, breakdown: DetoursBreakdown = None, format: FormatQ = "json",
        limit: LimitQ = 1000, offset: OffsetQ = 0, compare_with: CompareQ = None) -> Any:
    req.breakdown = split_breakdown(breakdown)
    d, dims = req.definition, req.breakdown
    detours.build(req.wh.database, d, breakdown=dims, **req.kw())
    names = list(detours.DEFAULT if dims is None else dims)
    out: Outcome[Any, Pairs] = await run_report(
        req, lambda **k: detours.run(req.wh, d, breakdown=dims, **k), how=compare_with,
        paired=lambda now, then: compare.detours(d, names, now, then),
        unpaired=lambda now: ([(r, None) for r in now[0]], [(s, None) for s in now[1]]))
    if format == "csv":
        return out.csv(lambda rs: detours.to_frame(rs, dims), (), f"{d.name}-detours")
    chunk, fields = out.page(limit, offset)
    return DetoursOut(**await req.cohort(detours.DEFAULT), **fields, **out.compare_fields(),
                      rows=[DetourGroup(**r._asdict(), compare=_changes(c)) for r, c in chunk],
                      shares=[DetourShareOut(**s._asdict(), compare=_changes(c))
                              for s, c in out.extra])


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
    versions = read_versions(st.definitions, journey, version)
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
