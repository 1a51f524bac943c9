"""What one batch of the customer stage produces (stream.stages.customers), and the
order it is written in: final rows, observations, closes and handovers, then the
states (stream.stages.parts order), then provisional rows (docs/stream.md "Exactly once
in effect")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from stream.engine.outputs import InstanceRow, Retraction, StepReached
from stream.engine.session_state import SessionRow
from stream.eventtime.watermarks import Claim
from stream.stages.duplicates import Conflict
from stream.stages.envelopes import EnvelopeBuilder
from stream.stages.validate import LateEvent


class Ev(NamedTuple):
    """A by-customer event; its tuple form is the engine's tail event."""

    occurred_at: int
    event_id: str
    type: str
    channel: str
    context: dict[str, Any] | None
    value: float | None = None  # journey value (docs/semantics.md "Journey value")


@dataclass
class CustomerBatch:
    """Everything one batch (or timer tick) produces, written before states are stored."""

    session_rows: list[SessionRow] = field(default_factory=list)
    instance_rows: list[InstanceRow] = field(default_factory=list)
    retractions: list[Retraction] = field(default_factory=list)
    closed: list[InstanceRow] = field(default_factory=list)
    # partition -> (observations, the partition's claim for the alert stage)
    reached: dict[int, tuple[list[StepReached], Claim]] = field(default_factory=dict)
    handovers: EnvelopeBuilder = field(default_factory=EnvelopeBuilder)
    # table key -> (changelog partition, value or None to delete)
    states: dict[bytes, tuple[int, bytes | None]] = field(default_factory=dict)
    late: list[LateEvent] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)  # dead-lettered
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    redelivered: int = 0
    undecodable: int = 0
    absorbed: int = 0
    released: int = 0
    advanced: int = 0
    held: int = 0
    holds_expired: int = 0
    forgotten: int = 0  # keys emptied by forget control items (journeys.control)

    # ids of sessions still open and of instances not final after the batch: their
    # rows are provisional, written after the states are stored (module docstring)
    open_sessions: set[str] = field(default_factory=set)
    open_instances: set[str] = field(default_factory=set)

    def drop_rows_of(self, key: str) -> None:
        """Leave out the rows of a key written earlier in this batch (it is forgotten)."""
        self.session_rows = [r for r in self.session_rows if r.customer_id != key]
        self.instance_rows = [r for r in self.instance_rows if r.customer_id != key]
        self.closed = [r for r in self.closed if r.customer_id != key]
        self.retractions = [r for r in self.retractions if r.customer_id != key]

    def has_output(self) -> bool:
        return bool(self.session_rows or self.instance_rows or self.retractions)

    def final(self) -> tuple[list[SessionRow], list[InstanceRow]]:
        """Rows to write before the states are stored (they cannot vanish again)."""
        return ([r for r in self.session_rows if not self._provisional_session(r)],
                [r for r in self.instance_rows if not self._provisional_instance(r)])

    def provisional(self) -> tuple[list[SessionRow], list[InstanceRow]]:
        """Rows of what is still open: written after the states are stored."""
        return ([r for r in self.session_rows if self._provisional_session(r)],
                [r for r in self.instance_rows if self._provisional_instance(r)])

    def _provisional_session(self, r: SessionRow) -> bool:
        # by id, deletions too: an id open after the batch has all its rows of the
        # batch written in the order (and so the versions) they were made, even one
        # deleted and back in the same batch
        return r.session_id in self.open_sessions

    def _provisional_instance(self, r: InstanceRow) -> bool:
        # non-final: still in the state's `emitted`, whatever its status (a run that
        # closed inside the unsettled tail can still vanish)
        return r.instance_id in self.open_instances


@dataclass
class ProvisionalCarry:
    """Provisional rows of a batch's earlier chunks, not written yet (docs/stream.md
    "Exactly once in effect"; docs/performance.md "`journeys up`: one insert per table").

    A Faust batch of a backlog is prepared in chunks (stream.agents.context.byte_chunks),
    each stored before the next; its offsets are committed after the last. A chunk's
    provisional rows may be written with the next chunk's final rows (before that
    chunk's store): still after their own states were stored, and before the commit,
    since the last chunk's are written before the batch returns. A crash in between is
    the window there always was between a store and its provisional write (the batch is
    read again, the values are loaded in a new generation and their open rows written
    again). So a chunk costs one insert per table instead of two; with the embedded
    engine every insert is a new part (~12 ms for journey_instances, measured)."""

    sessions: list[SessionRow] = field(default_factory=list)
    instances: list[InstanceRow] = field(default_factory=list)

    def add(self, sessions: list[SessionRow], instances: list[InstanceRow]) -> None:
        self.sessions.extend(sessions)
        self.instances.extend(instances)

    def take(self) -> tuple[list[SessionRow], list[InstanceRow]]:
        """The carried rows (in the order they were produced), and the carry empty."""
        out = self.sessions, self.instances
        self.sessions, self.instances = [], []
        return out

    def __bool__(self) -> bool:
        return bool(self.sessions or self.instances)
