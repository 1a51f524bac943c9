"""FastAPI application factory for the query API (and the dashboard page).

Built from an ApiSettings object; the warehouse can be passed in (embedded mode shares
one chdb engine between worker and API in one process) or is connected at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from anyio import to_thread
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from api import errors
from api.auth import KeyRing, require
from api.deps import ApiState
from api.openapi import AUTH_RESPONSES, BAD_INPUT, DESCRIPTION, TAGS
from api.routes import (
    alerts,
    customer_search,
    customers,
    health,
    journeys,
    late_events,
    reports,
    reports_journeys,
    reports_pm,
    status,
)
from journeys import __version__, envvars
from journeys.definitions import Definitions, load_definitions
from journeys.settings import ApiSettings
from warehouse.backend import Warehouse

log = logging.getLogger(__name__)


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
    keyring = KeyRing(settings.api_keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        wh = warehouse
        if wh is None:
            from warehouse.connect import connect

            wh = await to_thread.run_sync(lambda: connect(settings.warehouse))
        if not keyring.enabled:
            log.warning("no API keys configured: the query API answers anyone "
                        "(set %s to require keys)", envvars.API_KEYS)
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
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.keyring = keyring
    errors.install(app)
    app.include_router(health.router, responses=BAD_INPUT)
    read, read_responses = [Depends(require("read"))], AUTH_RESPONSES | BAD_INPUT
    for router in (journeys.router, reports.router, alerts.router, reports_journeys.router,
                   reports_pm.router, late_events.router, status.router,
                   customer_search.router):
        app.include_router(router, dependencies=read, responses=read_responses)
    app.include_router(customers.router, dependencies=[Depends(require("admin"))],
                       responses=AUTH_RESPONSES | BAD_INPUT)

    # The dashboard: a page and its scripts/styles (api/static/, no data in them), open
    # like /docs; every number on it comes from the /v1 endpoints, with the user's key.
    static = resources.files("api").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(static.joinpath("dashboard.html").read_text())

    return app
