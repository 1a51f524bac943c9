"""Request-scoped access to what the app was built with (no globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
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


def state(request: Request) -> ApiState:
    return request.app.state.journeys
