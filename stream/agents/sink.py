"""The stream stages' view of the warehouse: one blocking write per batch and stage.

Uses the warehouse package (connect, schema.migrate, writers). Blocking by design: the
agents call it through `asyncio.to_thread`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from journeys.events import Touchpoint
from journeys.settings import WarehouseConfig
from stream.engine.identity import MergeRecord
from stream.engine.journeys import InstanceRow, Retraction
from stream.engine.session_state import SessionRow
from stream.stages.validate import DeadLetter, LateEvent
from warehouse.backend import Warehouse
from warehouse.writers import (
    write_dead_letters,
    write_late_events,
    write_sessions,
    write_touchpoints,
)
from warehouse.writers_identity import write_identity_merges
from warehouse.writers_journeys import journey_retraction_row, write_journey_instance_columns

log = logging.getLogger(__name__)


class WarehouseSink:
    """Owns (or borrows) a Warehouse and writes the stream's rows to it."""

    def __init__(self, config: WarehouseConfig, warehouse: Warehouse | None = None) -> None:
        self.config = config
        self._wh = warehouse
        self._owned = warehouse is None
        self.enabled = True
        self._side: ThreadPoolExecutor | None = None  # write_customers' other inserts
        self._side_lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._wh is not None

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
            migrate(self._wh, self.config.cluster)

    def close(self) -> None:
        with self._side_lock:
            side, self._side = self._side, None
        if side is not None:
            side.shutdown(wait=True)
        if self._owned and self._wh is not None:
            self._wh.close()
            self._wh = None

    def write_raw(self, touchpoints: Sequence[Touchpoint], dead: Sequence[DeadLetter],
                  late: Sequence[LateEvent] = ()) -> None:
        """The validate stage's batch: raw events, rejected inputs and late events (all
        idempotent to re-send, so a failed later insert is retried with the first)."""
        if touchpoints:
            write_touchpoints(self.warehouse, touchpoints)
        if dead:
            write_dead_letters(self.warehouse, dead)
        if late:
            write_late_events(self.warehouse, late)

    def write_customers(self, sessions: Sequence[SessionRow], instances: Sequence[InstanceRow],
                        retractions: Sequence[Retraction],
                        late: Sequence[LateEvent] = ()) -> None:
        """The customer stage's batch: session rows, journey instance upserts and
        retractions in one insert (ReplacingMergeTree by version: replays collapse), late
        events. Both go as columns built straight from the engine's rows. Returns once
        every insert is done (the stage's write order, docs/stream.md "Exactly once in
        effect", needs no more); on a ClickHouse server the inserts run side by side."""
        wh = self.warehouse
        writes: list[Callable[[], object]] = []
        if sessions:
            writes.append(lambda: write_sessions(wh, sessions))
        if instances or retractions:
            tombstones = [journey_retraction_row(r.instance_id, r.journey, r.customer_id,
                                                 r.opened_at_ms, r.version,
                                                 r.definition_version)
                          for r in retractions]
            writes.append(lambda: write_journey_instance_columns(wh, instances, tombstones))
        if late:
            writes.append(lambda: write_late_events(wh, late))
        self._all(writes)

    def _all(self, writes: list[Callable[[], object]]) -> None:
        """Run the inserts, the first in this thread and the others beside it when the
        warehouse is a server (a pool of connections, warehouse/server.py; the embedded
        engine takes them one by one); raise the first failure once all have ended.
        Each insert is a round trip of ~100 ms at 5,000 events/s, most of it waiting
        on the server (docs/performance.md "Session rows at 5,000/s")."""
        if len(writes) < 2 or getattr(self.warehouse, "backend", None) != "server":
            for write in writes:
                write()
            return
        with self._side_lock:
            if self._side is None:
                self._side = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sink")
            others = [self._side.submit(write) for write in writes[1:]]
        try:
            writes[0]()
        finally:
            failures = [f.exception() for f in others]  # waits for every one
        for failure in failures:
            if failure is not None:
                raise failure

    def write_merges(self, merges: Sequence[MergeRecord]) -> None:
        if merges:
            write_identity_merges(self.warehouse, [m.to_dict() for m in merges])
