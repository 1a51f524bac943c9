"""Response models of the product manager's view (issue #16): time to convert, trend,
drop-off drivers, designed vs actual (sequences, non-step types) and the scorecard.
Shapes follow api/routes/report_models.py: the cohort echoed, dimension fields, pages."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from api import openapi_pm
from api.routes.report_models import Changes, Cohort, Dims, Page


class Bucket(BaseModel):
    label: str
    from_seconds: float = Field(description="inclusive")
    to_seconds: float | None = Field(description="exclusive; null: no upper bound")


class TimeRowOut(Dims):
    segment: str = Field(description="`transition` (from_step -> the next step) or "
                         "`end_to_end` (opened -> converted)")
    from_step: str
    to_step: str
    instances: int = Field(description="instances that reached to_step (end_to_end: converted)")
    measured: int = Field(description="of those, with a known duration (a capped path may "
                          "not show when a step was reached: docs/semantics.md)")
    same_event: int | None = Field(description="transitions: both steps first reached by one "
                                   "event (a jump over steps: duration 0)")
    p50_seconds: float | None = Field(description="exact median (upper median for an even "
                                      "count): the value at rank floor(0.5 n) of the sorted n")
    p90_seconds: float | None = Field(description="the value at rank floor(0.9 n)")
    mean_seconds: float | None
    histogram: list[int] = Field(description="measured instances per bucket (`buckets`)")


class TimeToConvertOut(Page, Cohort):
    model_config = ConfigDict(json_schema_extra={"examples": [openapi_pm.TIME_EXAMPLE]})

    buckets: list[Bucket]
    rows: list[TimeRowOut]


class TrendRowOut(BaseModel):
    period: date = Field(description="the day, or the Monday of the ISO week")
    first_day: date = Field(description="the period's first day inside from..to")
    last_day: date = Field(description="the period's last day inside from..to")
    partial: bool = Field(description="a week with fewer than 7 days inside from..to")
    channel: str | None = Field(None, description="entry channel (breakdown 'channel')")
    context: dict[str, str | None] | None = None
    opened: int
    converted: int
    abandoned: int
    open: int
    conversion_rate: float | None
    abandonment_rate: float | None


class TrendOut(Page, Cohort):
    model_config = ConfigDict(json_schema_extra={"examples": [openapi_pm.TREND_EXAMPLE]})

    interval: str
    rows: list[TrendRowOut]


class DriverOut(BaseModel):
    feature: str = Field(description="entry_channel, last_channel, context.<key> or detour")
    value: str
    dropped_with: int
    went_on_with: int
    share_of_dropped: float | None
    share_of_went_on: float | None
    drop_rate: float | None = Field(description="dropped_with / (dropped_with + went_on_with)")
    lift: float | None = Field(description="drop_rate / the population's drop rate")
    p_value: float | None = Field(description="two-proportion z-test (two-sided): drop rate "
                                  "with the feature vs without it")


class DriversOut(Cohort):
    model_config = ConfigDict(json_schema_extra={"examples": [openapi_pm.DRIVERS_EXAMPLE]})

    step: str
    step_index: int
    dropped: int = Field(description="abandoned at the step")
    went_on: int = Field(description="reached a later step (any status)")
    drop_rate: float | None
    features_tested: int = Field(description="distinct (feature, value) pairs compared")
    over_represented: int = Field(description="of those, with lift > 1 (the top are listed)")
    drivers: list[DriverOut]


class SequenceOut(BaseModel):
    sequence: list[str]
    designed: bool = Field(description="the designed order (a prefix of the steps)")
    instances: int
    converted: int
    abandoned: int
    open: int
    share: float | None = Field(description="of the instances with a complete path")


class StatusFollowed(BaseModel):
    status: str
    instances: int
    truncated: int
    followed: int
    followed_share: float | None


class OtherSequences(BaseModel):
    instances: int
    distinct_sequences: int


class SequencesOut(Cohort):
    model_config = ConfigDict(json_schema_extra={"examples": [openapi_pm.SEQUENCES_EXAMPLE]})

    designed: list[str] = Field(description="the definition's steps")
    instances: int
    truncated: int = Field(description="capped paths: sequence unknown, left out")
    followed: int
    followed_share: float | None = Field(description="followed / (instances - truncated)")
    distinct_sequences: int
    by_status: list[StatusFollowed]
    sequences: list[SequenceOut]
    other: OtherSequences = Field(description="complete-path instances not listed")


class PositionOut(BaseModel):
    after_step: str = Field(description="the furthest step reached when the event happened")
    events: int
    instances: int


class NonStepTypeOut(BaseModel):
    type: str
    in_off_path: bool | None = Field(description="listed as off_path by the definition; null: "
                                     "the definition lists none (every non-step type is)")
    events: int
    instances: int
    share_of_instances: float | None
    converted_with: int
    converted_share: float | None
    abandoned_with: int
    abandoned_share: float | None
    positions: list[PositionOut]


class NonStepTypesOut(Cohort):
    model_config = ConfigDict(json_schema_extra={"examples": [openapi_pm.TYPES_EXAMPLE]})

    instances: int
    converted: int
    abandoned: int
    types_found: int
    types: list[NonStepTypeOut]


class ScoreOut(BaseModel):
    journey: str
    version: str = Field(description="the definition version the line reads: the current one "
                         "(a journey's own reports take `version=` for another)")
    opened: int
    converted: int
    abandoned: int
    open: int
    conversion_rate: float | None
    abandonment_rate: float | None
    median_seconds_to_convert: float | None
    worst_step: str | None = Field(description="the step most abandoned instances dropped at")
    worst_step_abandoned: int
    worst_step_drop_rate: float | None = Field(description="abandoned there / reached it")
    alerts_fired: int = Field(description="drop-off alerts fired with a window starting in "
                              "the range")
    value_converted: float | None = Field(description="sum of the converted instances' "
                                          "journey value (the latest numeric "
                                          "properties.value of each); null: none carries one")
    value_abandoned: float | None = Field(description="the same over the abandoned instances "
                                          "(the value left on the table)")
    converted_with_value: int = Field(description="converted instances with a journey value")
    abandoned_with_value: int = Field(description="abandoned instances with a journey value")
    compare: Changes | None = Field(description="each figure against the previous period")


class ScorecardOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [openapi_pm.SCORECARD_EXAMPLE]})

    date_from: date = Field(serialization_alias="from")
    date_to: date = Field(serialization_alias="to")
    channel: str | None
    previous_from: date | None = Field(description="null when from is 1970-01-01")
    previous_to: date | None
    late_events: int = 0
    journeys: list[ScoreOut]
