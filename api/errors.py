"""The only place product errors become HTTP statuses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.auth import Forbidden, Unauthenticated
from journeys.errors import (
    ConfigError,
    DefinitionNotFound,
    InvalidQuery,
    JourneysError,
    NotFound,
    ServiceUnavailable,
    WarehouseError,
)

STATUS: tuple[tuple[type[JourneysError], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (DefinitionNotFound, 404),
    (NotFound, 404),
    (InvalidQuery, 422),
    (ServiceUnavailable, 503),
    (WarehouseError, 502),
    (ConfigError, 500),
)


def status_for(exc: JourneysError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def install(app: FastAPI) -> None:
    """Register handlers: product errors -> status + {"error", "detail"}; never a bare 500."""

    @app.exception_handler(JourneysError)
    async def _product_error(_: Request, exc: JourneysError) -> JSONResponse:
        status = status_for(exc)
        headers = {"Retry-After": "5"} if status == 503 else None
        if status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(
            {"error": type(exc).__name__, "detail": str(exc)}, status_code=status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        return JSONResponse(
            {"error": "InvalidRequest", "detail": problems}, status_code=422
        )
