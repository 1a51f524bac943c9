"""The stream stage's view of the warehouse: one blocking `write_batch` per batch.

Uses the warehouse package (connect, schema.migrate, writers). Blocking by design: the
agents call it through `asyncio.to_thread`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from journeys.events import Rejection, Touchpoint
from journeys.settings import WarehouseConfig
from stream.sessions import SessionRow
from warehouse.backend import Warehouse
from warehouse.writers import write_dead_letters, write_sessions, write_touchpoints

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
        """Connect and run the idempotent migration, unless given a Warehouse (then its
        owner has migrated it)."""
        if self._wh is None:
            from warehouse.connect import connect
            from warehouse.schema import migrate

            self._wh = connect(self.config)
            migrate(self._wh)

    def close(self) -> None:
        if self._owned and self._wh is not None:
            self._wh.close()
            self._wh = None

    def write_batch(self, touchpoints: Sequence[Touchpoint], rows: Sequence[SessionRow]) -> None:
        """Raw events first, then session rows: if the second insert fails, the retry
        rewrites both (idempotent), and no session row ever precedes its events."""
        if touchpoints:
            write_touchpoints(self.warehouse, touchpoints)
        if rows:
            write_sessions(self.warehouse, rows)

    def write_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        if dead:
            write_dead_letters(self.warehouse, dead)
