"""Drop-off alert history and the alert rules in force (rules come from the definitions)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from anyio import to_thread
from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from api.deps import ApiState, state
from api.openapi import ALERTS_422, NOT_FOUND_ALERT
from api.params import IsoDateTime
from api.versions import VersionQuery, current
from journeys.errors import InvalidQuery, NotFound
from journeys.timeutil import datetime_to_ms, format_duration_ms, ms_to_datetime
from journeys.versions import shown_version, stored_version
from warehouse.queries import alerts as alerts_query

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

MAX_OFFSET = 1_000_000


class AlertOut(BaseModel):
    alert_id: str
    kind: Literal["fired", "recovered"]
    journey: str
    step: str
    step_index: int
    channel: str = Field(description="the channel of the event that reached the step, or 'all'")
    window_start: datetime
    window_end: datetime
    horizon: str
    population: int = Field(description="instances that first reached the step in the window")
    dropped: int = Field(description="of those, how many reached no later step within horizon")
    rate: float
    baseline: float = Field(description="mean rate of recent qualifying windows that did not fire")
    baseline_windows: int
    threshold: float
    confidence: float
    p_value: float = Field(description="P(X >= dropped), X ~ Binomial(population, baseline)")
    resolves: str | None = Field(description="recovered: the alert_id this notice closes")
    created_at: datetime
    definition_version: str = Field(
        description="version of the definition whose rule judged it ('unversioned': "
                    "written before versions)")


class AlertPage(BaseModel):
    alerts: list[AlertOut]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class AlertRuleOut(BaseModel):
    journey: str
    steps: list[str] = Field(description="steps evaluated (every step but the goal)")
    window: str
    horizon: str
    baseline_windows: int
    min_volume: int
    threshold: float
    confidence: float


class AlertRulesOut(BaseModel):
    definitions_version: str
    rules: list[AlertRuleOut]


def _out(r: alerts_query.AlertRow) -> AlertOut:
    return AlertOut(
        alert_id=r.alert_id, kind=r.kind, journey=r.journey,  # type: ignore[arg-type]
        step=r.step, step_index=r.step_index, channel=r.channel,
        window_start=ms_to_datetime(r.window_start_ms), window_end=ms_to_datetime(r.window_end_ms),
        horizon=format_duration_ms(r.horizon_ms), population=r.population, dropped=r.dropped,
        rate=r.rate, baseline=r.baseline, baseline_windows=r.baseline_windows,
        threshold=r.threshold, confidence=r.confidence, p_value=r.p_value,
        resolves=r.resolves or None, created_at=ms_to_datetime(r.created_at_ms),
        definition_version=shown_version(r.definition_version),
    )


def _ms(value: datetime | None, name: str) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return max(0, datetime_to_ms(value))  # nothing is older than 1970: the same range


@router.get("", response_model=AlertPage, summary="Alert history, newest window first",
            responses={422: ALERTS_422})
async def list_alerts(
    st: Annotated[ApiState, Depends(state)],
    journey: Annotated[str | None, Query(max_length=64)] = None,
    step: Annotated[str | None, Query(max_length=64)] = None,
    channel: Annotated[str | None, Query(max_length=32, description="a channel or 'all'")] = None,
    kind: Annotated[Literal["fired", "recovered"] | None, Query()] = None,
    date_from: Annotated[IsoDateTime | None, Query(
        alias="from", description="window start at or after (ISO-8601; no zone = UTC)")] = None,
    date_to: Annotated[IsoDateTime | None, Query(
        alias="to", description="window start before (ISO-8601; no zone = UTC)")] = None,
    limit: Annotated[int, Query(ge=1, le=alerts_query.MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    version: VersionQuery = None,
) -> AlertPage:
    # the keywords of alerts_query.build/run (their signatures are the one statement)
    filters: dict[str, Any] = {
        "journey": journey, "step": step, "channel": channel, "kind": kind,
        "from_ms": _ms(date_from, "from"), "to_ms": _ms(date_to, "to"),
        "limit": limit, "offset": offset, "versions": _versions(st, journey, version),
    }
    alerts_query.build(st.warehouse.database, **filters)  # bad input -> 422 before any I/O
    rows, total = await to_thread.run_sync(lambda: alerts_query.run(st.warehouse, **filters))
    nxt = offset + len(rows)
    return AlertPage(alerts=[_out(r) for r in rows], total=total, limit=limit, offset=offset,
                     next_offset=nxt if nxt < total else None)


def _versions(st: ApiState, journey: str | None,
              version: str | None) -> list[tuple[str, str]]:
    """Each definition's current version, or `version` of `journey` (required then; a
    journey no longer defined included: its stored alerts stay listable, no 404)."""
    if version is None:
        return current(st.definitions)
    if journey is None:
        raise InvalidQuery("'version' needs 'journey': versions are per definition")
    return [(journey, stored_version(version))]


@router.get("/rules", response_model=AlertRulesOut, summary="Alert rules from the definitions")
async def alert_rules(st: Annotated[ApiState, Depends(state)]) -> AlertRulesOut:
    defs = st.definitions
    return AlertRulesOut(
        definitions_version=defs.version,
        rules=[
            AlertRuleOut(
                journey=j.name, steps=list(j.steps[:-1]),
                window=format_duration_ms(j.alert.window_ms),
                horizon=format_duration_ms(j.alert.horizon_ms),
                baseline_windows=j.alert.baseline_windows, min_volume=j.alert.min_volume,
                threshold=j.alert.threshold, confidence=j.alert.confidence,
            )
            for j in defs.journeys
        ],
    )


@router.get("/{alert_id}", response_model=AlertOut, summary="One alert or recovery notice",
            responses={404: NOT_FOUND_ALERT})
async def get_alert(
    st: Annotated[ApiState, Depends(state)],
    alert_id: Annotated[str, Path(pattern=r"^[0-9a-f]{24}$")],
) -> AlertOut:
    row = await to_thread.run_sync(lambda: alerts_query.get(st.warehouse, alert_id))
    if row is None:
        raise NotFound(f"no alert {alert_id!r}")
    return _out(row)
