"""Journey definitions as loaded (the rules every report and alert is computed with),
each with its current version and the versions the warehouse holds results of."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from api.deps import ApiState, state
from journeys.timeutil import format_duration_ms
from journeys.versions import shown_version
from warehouse.queries import definition_versions

router = APIRouter(prefix="/v1", tags=["journeys"])


class AlertRuleOut(BaseModel):
    window: str
    horizon: str
    baseline_windows: int
    min_volume: int
    threshold: float
    confidence: float


class JourneyOut(BaseModel):
    name: str
    version: str = Field(description="the current version: reports read it by default")
    versions_stored: list[str] = Field(
        description="versions with result rows in the warehouse (`version=` on reports; "
                    "'unversioned': rows written before versions)")
    description: str
    steps: list[str]
    entry: str
    goal: str
    abandon_after: str
    conversion_window: str
    off_path: list[str] | None
    alert: AlertRuleOut


class JourneysOut(BaseModel):
    version: str = Field(description="version of the whole definitions file")
    session_gap: str
    journeys: list[JourneyOut]
    other_versions_stored: dict[str, list[str]] = Field(
        description="journeys no longer defined that still have result rows: their versions")


@router.get("/journeys", response_model=JourneysOut, summary="Journey definitions in force")
async def list_journeys(st: Annotated[ApiState, Depends(state)]) -> JourneysOut:
    defs = st.definitions
    stored = await to_thread.run_sync(lambda: definition_versions.run(st.warehouse))
    shown = {name: [shown_version(v) for v in vs] for name, vs in stored.items()}
    return JourneysOut(
        version=defs.version,
        session_gap=format_duration_ms(defs.sessions.gap_ms),
        other_versions_stored={n: v for n, v in shown.items() if n not in defs.names},
        journeys=[
            JourneyOut(
                name=j.name, version=j.version, versions_stored=shown.get(j.name, []),
                description=j.description,
                steps=list(j.steps),
                entry=j.entry,
                goal=j.goal,
                abandon_after=format_duration_ms(j.abandon_after_ms),
                conversion_window=format_duration_ms(j.conversion_window_ms),
                off_path=list(j.off_path) if j.off_path is not None else None,
                alert=AlertRuleOut(
                    window=format_duration_ms(j.alert.window_ms),
                    horizon=format_duration_ms(j.alert.horizon_ms),
                    baseline_windows=j.alert.baseline_windows,
                    min_volume=j.alert.min_volume,
                    threshold=j.alert.threshold,
                    confidence=j.alert.confidence,
                ),
            )
            for j in defs.journeys
        ],
    )
