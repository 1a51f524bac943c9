"""The product manager's view (issue #16): time to convert, trend, drop-off drivers,
designed vs actual (step sequences, non-step types) per journey, and the scorecard over
every definition. Same conventions as api/routes/reports_journeys.py: SQL built (and so
validated) before any I/O, blocking queries in a worker thread, `format=csv` on each,
the cohort (from/to used) echoed. Models: api/routes/pm_models.py; docs/reports.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request

from api.deps import ApiState, state
from api.openapi import BREAKDOWN_EXAMPLES
from api.openapi_pm import PM_RESPONSES, SCORECARD_RESPONSES
from api.params import breakdown_query, date_range, last_data_day
from api.routes.pm_models import (
    Bucket,
    DriverOut,
    DriversOut,
    NonStepTypeOut,
    NonStepTypesOut,
    OtherSequences,
    PositionOut,
    ScorecardOut,
    ScoreOut,
    SequenceOut,
    SequencesOut,
    StatusFollowed,
    TimeRowOut,
    TimeToConvertOut,
    TrendOut,
    TrendRowOut,
)
from api.routes.report_common import (
    ChannelQ,
    Common,
    FormatQ,
    FromQ,
    LimitQ,
    OffsetQ,
    Outcome,
    ToQ,
    csv_response,
    run_report,
    split_breakdown,
)
from api.routes.report_models import ChangeOut
from journeys.errors import InvalidQuery
from journeys.versions import shown_version
from warehouse.queries import (
    dropoff_drivers,
    late_events,
    non_step_types,
    scorecard,
    sequences,
    time_to_convert,
    trend,
)
from warehouse.tables import JOURNEY_INSTANCES

router = APIRouter(prefix="/v1", tags=["product manager"])

_DIMS = "dimensions, repeated or comma-separated: channel, {}context.<key> (up to 2)"
if TYPE_CHECKING:  # what FastAPI passes; at run time, Annotated with the schema and docs
    TimeBreakdown: TypeAlias = list[str] | None
    TrendBreakdown: TypeAlias = list[str] | None
else:
    TimeBreakdown = breakdown_query(time_to_convert.ALLOWED, _DIMS.format("day or hour, "),
                                    BREAKDOWN_EXAMPLES)
    TrendBreakdown = breakdown_query(trend.ALLOWED, _DIMS.format(""), {
        k: v for k, v in BREAKDOWN_EXAMPLES.items() if k != "per_day"})
BUCKETS = [Bucket(label=label, from_seconds=lo / 1000,
                  to_seconds=None if hi is None else hi / 1000)
           for label, lo, hi in time_to_convert.BUCKETS]


@router.get("/journeys/{name}/time-to-convert", response_model=TimeToConvertOut,
            responses=PM_RESPONSES,
            summary="Time from each step to the next and from opening to conversion")
async def time_to_convert_report(req: Common, breakdown: TimeBreakdown = None,
        format: FormatQ = "json", limit: LimitQ = 1000, offset: OffsetQ = 0) -> Any:
    req.breakdown = split_breakdown(breakdown)
    d, dims = req.definition, req.breakdown
    time_to_convert.build(req.wh.database, d, breakdown=dims, **req.kw())
    out: Outcome[Any, None] = await run_report(
        req, lambda **k: time_to_convert.run(req.wh, d, breakdown=dims, **k))
    if format == "csv":
        return out.csv(lambda rs: time_to_convert.to_frame(rs, dims), (),
                       f"{d.name}-time-to-convert")
    chunk, fields = out.page(limit, offset)
    return TimeToConvertOut(**await req.cohort(), **fields, buckets=BUCKETS, rows=[
        TimeRowOut(**{**r._asdict(), "histogram": list(r.histogram)}) for r, _ in chunk])


@router.get("/journeys/{name}/trend", response_model=TrendOut, responses=PM_RESPONSES,
            summary="Conversion and abandonment per day or ISO week opened")
async def trend_report(req: Common, breakdown: TrendBreakdown = None,
        interval: Annotated[Literal["day", "week"], Query(
            description="day, or ISO week (Monday to Sunday)")] = "day",
        format: FormatQ = "json", limit: LimitQ = 1000, offset: OffsetQ = 0) -> Any:
    req.breakdown = split_breakdown(breakdown)
    d, dims = req.definition, req.breakdown
    trend.build(req.wh.database, d, breakdown=dims, interval=interval, **req.kw())
    out: Outcome[Any, None] = await run_report(
        req, lambda **k: trend.run(req.wh, d, breakdown=dims, interval=interval, **k))
    if format == "csv":
        return out.csv(lambda rs: trend.to_frame(rs, dims), (), f"{d.name}-trend-{interval}")
    chunk, fields = out.page(limit, offset)
    return TrendOut(**await req.cohort(), **fields, interval=interval,
                    rows=[TrendRowOut(**r._asdict()) for r, _ in chunk])


@router.get("/journeys/{name}/dropoff-drivers", response_model=DriversOut,
            responses=PM_RESPONSES,
            summary="What is over-represented among instances that dropped at a step")
async def dropoff_drivers_report(
    req: Common,
    step: Annotated[str, Query(max_length=64, description="a step of the journey, not its "
                               "goal", examples=["payment_details"])],
    top: Annotated[int, Query(ge=1, le=dropoff_drivers.MAX_TOP,
                              description="drivers listed")] = 10,
    format: FormatQ = "json",
) -> Any:
    d, kw = req.definition, {**req.kw(), "step": step}
    dropoff_drivers.build(req.wh.database, d, **kw)
    rows, s = await to_thread.run_sync(lambda: dropoff_drivers.run(req.wh, d, top=top, **kw))
    if format == "csv":
        return csv_response(dropoff_drivers.to_frame(rows), f"{d.name}-dropoff-drivers")
    return DriversOut(**await req.cohort(), **s._asdict(),
                      drivers=[DriverOut(**r._asdict()) for r in rows])


@router.get("/journeys/{name}/sequences", response_model=SequencesOut, responses=PM_RESPONSES,
            summary="Designed vs actual: step sequences taken, share that followed the design")
async def sequences_report(
    req: Common, format: FormatQ = "json",
    limit: Annotated[int, Query(ge=1, le=sequences.MAX_LIMIT,
                                description="sequences listed; the rest is in `other`")] = 20,
) -> Any:
    d, kw = req.definition, req.kw()
    sequences.build(req.wh.database, d, limit=limit, **kw)
    rows, s, by_status = await to_thread.run_sync(
        lambda: sequences.run(req.wh, d, limit=limit, **kw))
    if format == "csv":
        return csv_response(sequences.to_frame(rows, s), f"{d.name}-sequences")
    return SequencesOut(
        **await req.cohort(), designed=list(d.steps), instances=s.instances,
        truncated=s.truncated, followed=s.followed, followed_share=s.followed_share,
        distinct_sequences=s.distinct_sequences,
        by_status=[StatusFollowed(**x._asdict()) for x in by_status],
        sequences=[SequenceOut(**{**r._asdict(), "sequence": list(r.sequence)}) for r in rows],
        other=OtherSequences(instances=s.other_instances, distinct_sequences=s.other_sequences))


@router.get("/journeys/{name}/non-step-types", response_model=NonStepTypesOut,
            responses=PM_RESPONSES,
            summary="Designed vs actual: event types outside the steps, and where they occur")
async def non_step_types_report(
    req: Common, format: FormatQ = "json",
    limit: Annotated[int, Query(ge=1, le=non_step_types.MAX_LIMIT,
                                description="types listed (most instances first)")] = 20,
) -> Any:
    d, kw = req.definition, req.kw()
    non_step_types.build(req.wh.database, d, **kw)
    rows, s = await to_thread.run_sync(lambda: non_step_types.run(req.wh, d, limit=limit, **kw))
    if format == "csv":
        return csv_response(non_step_types.to_frame(rows), f"{d.name}-non-step-types")
    return NonStepTypesOut(**await req.cohort(), **s._asdict(), types=[
        NonStepTypeOut(**{**r._asdict(), "positions": [PositionOut(**p._asdict())
                                                       for p in r.positions]}) for r in rows])


@router.get("/scorecard", response_model=ScorecardOut, responses=SCORECARD_RESPONSES,
            summary="Every journey's headline figures against the previous period")
async def scorecard_report(
    request: Request, st: Annotated[ApiState, Depends(state)], date_from: FromQ = None,
    date_to: ToQ = None, channel: ChannelQ = None, format: FormatQ = "json",
) -> Any:
    if "version" in request.query_params:  # versions are per definition: not silently ignored
        raise InvalidQuery("the scorecard reads each definition's current version; 'version' "
                           "is per definition: ask that journey's reports")
    last = await last_data_day(st, JOURNEY_INSTANCES.name) if date_to is None else None
    lo, hi = date_range(date_from, date_to, last)
    journeys = list(st.definitions.journeys)
    scorecard.build_alerts(st.warehouse.database, date_from=lo, date_to=hi, channel=channel,
                           versions=scorecard.versions(journeys))
    rows, before = await to_thread.run_sync(lambda: scorecard.run(
        st.warehouse, journeys, date_from=lo, date_to=hi, channel=channel))
    if format == "csv":
        return csv_response(scorecard.to_frame(rows), "scorecard")
    late = await to_thread.run_sync(lambda: late_events.total(st.warehouse, lo, hi))
    return ScorecardOut(
        date_from=lo, date_to=hi, channel=channel, late_events=late,
        previous_from=before[0] if before else None, previous_to=before[1] if before else None,
        journeys=[ScoreOut(**{**s._asdict(), "version": shown_version(s.version)},
                           compare=None if c is None else {
            k: ChangeOut(**v._asdict()) for k, v in c.items()}) for s, c in rows])
