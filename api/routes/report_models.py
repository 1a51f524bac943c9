"""Response models of the journey reports: one JSON shape per report, with examples.

Shared pieces keep the shapes consistent: every report echoes its cohort (journey,
from, to, channel, breakdown); grouped rows carry the same dimension fields (null when
not requested); paged lists carry total_rows/limit/offset/next_offset.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api import openapi


class Cohort(BaseModel):
    journey: str
    version: str = Field(description="the definition version reported (the current one "
                         "unless `version=` named another)")
    date_from: date = Field(serialization_alias="from")
    date_to: date = Field(serialization_alias="to")
    channel: str | None = Field(description="entry-channel filter, if any")
    breakdown: list[str]
    late_events: int = Field(0, description="events of these days left out of every figure "
                             "because they arrived late (GET /v1/late-events says which)")


class Page(BaseModel):
    total_rows: int = Field(description="rows of the whole report (all pages)")
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last")


class Dims(BaseModel):
    channel: str | None = Field(None, description="entry channel (breakdown 'channel')")
    day: date | None = Field(None, description="UTC day the instance opened")
    hour: datetime | None = Field(None, description="UTC hour the instance opened")
    context: dict[str, str | None] | None = Field(
        None, description="context.<key> breakdowns: key -> the opening event's value "
        "(null: the event had no such key)")


class ChangeOut(BaseModel):
    """One figure against the previous period (`compare=previous`)."""

    previous: float | None = Field(description="the figure in the previous period (a count "
                                   "absent there is 0; a rate without population is null)")
    change: float | None = Field(description="current - previous (rates: in proportion points)")
    relative_change: float | None = Field(description="change / previous; null when previous "
                                          "is 0 or null")
    p_value: float | None = Field(description="rates only: two-sided p-value of a "
                                  "two-proportion z-test of current vs previous; null for "
                                  "counts or an empty population")


Changes = dict[str, ChangeOut]


class Compared(BaseModel):
    """The fields a report adds with `compare=previous` (null without it)."""

    compare: Literal["previous"] | None = None
    previous_from: date | None = Field(None, description="first day of the previous period")
    previous_to: date | None = Field(None, description="last day of the previous period "
                                     "(the day before `from`)")


class CompareRow(BaseModel):
    compare: Changes | None = Field(None, description="compare=previous: each figure of the "
                                    "row -> its previous value and change")


class FunnelStep(CompareRow, Dims):
    step: str
    step_index: int
    instances: int = Field(description="instances whose furthest step is at or beyond this")
    converted: int
    dropped_here: int = Field(description="abandoned with this as their furthest step")
    share_of_opened: float | None


class FunnelOut(Compared, Page, Cohort):
    model_config = ConfigDict(json_schema_extra={"examples": [openapi.FUNNEL_EXAMPLE]})

    opened: int
    converted: int
    abandoned: int
    open: int
    conversion_rate: float | None = Field(description="converted / opened")
    totals_compare: Changes | None = Field(None, description="compare=previous: each total")
    steps: list[FunnelStep]


class AbandonmentGroup(CompareRow, Dims):
    step: str | None = Field(None, description="the step dropped at (furthest reached)")
    abandoned: int
    share_of_abandoned: float | None


class AbandonmentOut(Compared, Page, Cohort):
    model_config = ConfigDict(json_schema_extra={"examples": [openapi.ABANDONMENT_EXAMPLE]})

    opened: int
    abandoned: int
    converted: int
    open: int
    abandonment_rate: float | None = Field(description="abandoned / opened")
    totals_compare: Changes | None = Field(None, description="compare=previous: each total")
    rows: list[AbandonmentGroup]


class DetourGroup(CompareRow, Dims):
    kind: str
    step: str | None = Field(None, description="furthest step reached before the detour")
    detour_channel: str | None = Field(None, description="channel of the causing event")
    detours: int = Field(description="events that caused this detour")
    instances: int = Field(description="distinct instances with at least one")


class DetourShareOut(CompareRow):
    kind: str
    abandoned_with: int
    abandoned: int
    abandoned_share: float | None
    converted_with: int
    converted: int
    converted_share: float | None


class DetoursOut(Compared, Page, Cohort):
    model_config = ConfigDict(json_schema_extra={"examples": [openapi.DETOURS_EXAMPLE]})

    rows: list[DetourGroup]
    shares: list[DetourShareOut]


class PathOut(BaseModel):
    path: list[str]
    dropped_at: str
    instances: int
    share: float | None = Field(description="of all abandoned instances in the cohort")


class OtherPaths(BaseModel):
    instances: int
    distinct_paths: int


class PathsOut(Cohort):
    model_config = ConfigDict(json_schema_extra={"examples": [openapi.PATHS_EXAMPLE]})

    steps_only: bool
    abandoned: int
    distinct_paths: int
    paths: list[PathOut]
    other: OtherPaths = Field(description="abandoned instances whose path is not listed")


class DetourOut(BaseModel):
    kind: str
    step: str
    channel: str
    at: datetime


class TouchOut(BaseModel):
    type: str
    channel: str
    at: datetime


class CustomerJourneyOut(BaseModel):
    instance_id: str
    journey: str
    status: Literal["open", "converted", "abandoned"]
    opened_at: datetime
    closed_at: datetime | None
    last_event_at: datetime
    furthest_step: str
    furthest_step_index: int
    dropped_at: str | None
    entry_channel: str
    channels: list[str]
    events: int = Field(description="events in the instance (the path may list fewer)")
    path_truncated: bool = Field(
        description="the path and detours list the first events only (docs/semantics.md "
                    "\"Capped paths\"); counts and reports cover all of them")
    definition_version: str = Field(description="version of the definition that made it")
    path: list[TouchOut]
    detours: list[DetourOut]


class CustomerJourneysOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [openapi.CUSTOMER_EXAMPLE]})

    customer_id: str = Field(description="the stitched customer key the journeys belong to")
    resolved_from: str | None = Field(
        None, description="the anonymous id asked for, when stitching linked it to customer_id")
    journeys: list[CustomerJourneyOut]
    total: int
    limit: int
    offset: int
    next_offset: int | None
