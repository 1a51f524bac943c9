"""Journey definitions as loaded (the rules every report and alert is computed with)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from api.deps import ApiState, state
from journeys.timeutil import format_duration_ms

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
    description: str
    steps: list[str]
    entry: str
    goal: str
    abandon_after: str
    conversion_window: str
    off_path: list[str] | None
    alert: AlertRuleOut


class JourneysOut(BaseModel):
    version: str
    session_gap: str
    journeys: list[JourneyOut]


@router.get("/journeys", response_model=JourneysOut, summary="Journey definitions in force")
async def list_journeys(st: Annotated[ApiState, Depends(state)]) -> JourneysOut:
    defs = st.definitions
    return JourneysOut(
        version=defs.version,
        session_gap=format_duration_ms(defs.sessions.gap_ms),
        journeys=[
            JourneyOut(
                name=j.name,
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
