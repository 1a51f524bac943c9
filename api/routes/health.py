"""Liveness, readiness (warehouse answers) and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from api.auth import require
from api.deps import ApiState, state
from api.openapi import AUTH_RESPONSES
from journeys.metrics import CONTENT_TYPE, exposition

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Ready to answer queries (the warehouse responds)")
async def readyz(st: Annotated[ApiState, Depends(state)]) -> JSONResponse:
    ok = await to_thread.run_sync(st.warehouse.ping)
    body = {"status": "ready" if ok else "unavailable", "warehouse": ok,
            "definitions_version": st.definitions.version}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics (scope `metrics` when keys are set)",
            response_class=PlainTextResponse, responses=AUTH_RESPONSES,
            dependencies=[Depends(require("metrics"))])
async def metrics(st: Annotated[ApiState, Depends(state)]) -> Response:
    return Response(exposition(st.metrics), media_type=CONTENT_TYPE)
