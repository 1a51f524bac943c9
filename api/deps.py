"""Request-scoped access to what the app was built with (no globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fastapi import Request

from journeys.definitions import Definitions
from journeys.settings import ApiSettings
from warehouse.backend import Warehouse


@dataclass
class ApiState:
    """Everything handlers need, built once at start-up."""

    settings: ApiSettings
    definitions: Definitions
    warehouse: Warehouse
    metrics: dict[str, Any] = field(default_factory=dict)
    # table -> (monotonic time looked up, last UTC day with data): api.params.last_data_day
    last_days: dict[str, tuple[float, date | None]] = field(default_factory=dict)


def state(request: Request) -> ApiState:
    return request.app.state.journeys
