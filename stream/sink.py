"""The stream stage's view of the warehouse: one blocking `write_batch` per batch.

Uses the warehouse package (warehouse.connect / schema / writers). Blocking by design:
the agents call it through `asyncio.to_thread`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from journeys.events import Rejection, Touchpoint
from journeys.settings import WarehouseConfig
from stream.sessions import SessionRow
from warehouse.backend import Warehouse

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message with where it came from (for the dead_letters table)."""

    rejection: Rejection
    stage: str
    received_at_ms: int
    topic: str
    partition: int
    offset: int


def _writers() -> Any:
    return importlib.import_module("warehouse.writers")


class WarehouseSink:
    """Owns (or borrows) a Warehouse and writes the stream's rows to it."""

    def __init__(self, config: WarehouseConfig, warehouse: Warehouse | None = None) -> None:
        self.config = config
        self._wh = warehouse
        self._owned = warehouse is None
        self.enabled = True

    @property
    def warehouse(self) -> Warehouse:
        if self._wh is None:
            raise RuntimeError("warehouse sink used before open()")
        return self._wh

    def open(self) -> None:
        """Connect (unless given a Warehouse) and run the idempotent migration."""
        if self._wh is None:
            connect = importlib.import_module("warehouse.connect").connect
            self._wh = connect(self.config)
        importlib.import_module("warehouse.schema").migrate(self._wh)

    def close(self) -> None:
        if self._owned and self._wh is not None:
            self._wh.close()
            self._wh = None

    def write_batch(self, touchpoints: Sequence[Touchpoint], rows: Sequence[SessionRow]) -> None:
        """Raw events first, then session rows: if the second insert fails, the retry
        rewrites both (idempotent), and no session row ever precedes its events."""
        writers = _writers()
        if touchpoints:
            writers.write_touchpoints(self.warehouse, touchpoints)
        if rows:
            writers.write_sessions(self.warehouse, rows)

    def write_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        if dead:
            _writers().write_dead_letters(self.warehouse, dead)
