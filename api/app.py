"""FastAPI application factory for the query API (and the dashboard page).

Built from an ApiSettings object; the warehouse can be passed in (embedded mode shares
one chdb engine between worker and API in one process) or is connected at start-up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from anyio import to_thread
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from api import errors
from api.deps import ApiState
from api.routes import alerts, health, journeys, reports, reports_journeys
from journeys import __version__
from journeys.definitions import Definitions, load_definitions
from journeys.settings import ApiSettings
from warehouse.backend import Warehouse


def create_app(
    settings: ApiSettings,
    *,
    warehouse: Warehouse | None = None,
    definitions: Definitions | None = None,
    metrics: Mapping[str, Callable[[], Mapping[str, Any]]] | None = None,
) -> FastAPI:
    """Build the API. A passed-in warehouse is not closed on shutdown (its owner closes it)."""
    defs = definitions or load_definitions(settings.definitions_path)
    owns_warehouse = warehouse is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        wh = warehouse
        if wh is None:
            from warehouse.connect import connect

            wh = await to_thread.run_sync(lambda: connect(settings.warehouse))
        app.state.journeys = ApiState(
            settings=settings, definitions=defs, warehouse=wh, metrics=dict(metrics or {})
        )
        try:
            yield
        finally:
            if owns_warehouse:
                await to_thread.run_sync(wh.close)

    app = FastAPI(
        title="Journey pipeline API",
        version=__version__,
        description="Funnels, abandonment, detours, paths and drop-off alerts computed from "
        "customer touchpoints in real time. All report times are event times (UTC).",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(journeys.router)
    app.include_router(reports.router)
    app.include_router(alerts.router)
    app.include_router(reports_journeys.router)

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    async def dashboard() -> HTMLResponse:
        page = resources.files("api").joinpath("static/dashboard.html").read_text()
        return HTMLResponse(page)

    return app
