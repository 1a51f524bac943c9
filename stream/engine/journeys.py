"""Incremental journey engine (DESIGN.md "Journey instance", "Detours", abandonment), pure.

Per customer and definition it keeps exactly what can still change, and recomputes
that from a checkpoint on every batch, so out-of-order and duplicated events give the
same instances as the batch reference (tests/reference/journeys_ref.py):

- events with occurred_at < watermark are *settled*: any event still to come is not
  late, so it has occurred_at >= watermark and sorts after them. Settled events are
  folded, in reference order, into a checkpoint: per definition the run open after
  them (with its path). Runs they close, and a checkpoint run whose deadline the
  watermark reached, are final: emitted once more and forgotten;
- events with occurred_at >= watermark (the *tail*: at most `allowed lateness` of a
  customer's events) are kept sorted and deduplicated by event_id; each batch replays
  them from a copy of the checkpoint to get the current, still revisable instances.

State bound per customer: the tail, plus per definition one open run (its path, capped
at `path_cap` events with a summary of the rest: stream.engine.runs), plus (id, journey,
fingerprint, opening time) of every non-final instance last emitted. Nothing of closed
instances is kept. The state lives in stream.engine.journey_state; settling, the step
every operation ends in, in stream.engine.journey_settle.

Identity stitching (`release` / `absorb`): an anonymous key that gets linked to a
customer hands its non-final events (open runs' paths and the tail) over; the customer
replays its own open runs together with them, so the merged instances are what the
reference gives over both sides' non-final events (docs/stream.md); a capped run is
continued from its summary instead (stream.engine.merge, docs/semantics.md).

Outputs (`JourneyDelta`): instance upserts for a ReplacingMergeTree(version) table,
versions from a per-customer counter, so they only grow for an instance id; retractions
of ids a late event made vanish (a late earlier entry event absorbs a later one);
closed instances once final (for the journeys-closed topic); and `StepReached`
observations for the drop-off evaluator, emitted once the watermark passes the time
the step was reached, when they can no longer change (the evaluator cannot retract).
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from journeys.definitions import JourneyDefinition
from journeys.events import event_value
from stream.engine.journey_settle import JourneySettler
from stream.engine.journey_state import CustomerJourneys
from stream.engine.merge import merge_plan
from stream.engine.outputs import (
    InstanceRow,
    JourneyDelta,
    Retraction,
    fold_rows,
    retraction,
)
from stream.engine.rows import instance_row
from stream.engine.runs import (
    PATH_CAP,
    Run,
    TailEvent,
    decode_run,
    encode_run,
    path_events,
)
from stream.eventtime.watermarks import NO_WATERMARK

__all__ = ["CustomerJourneys", "InstanceRow", "JourneyDelta", "JourneyEngine", "Retraction",
           "fold_rows"]


class JourneyEventLike(Protocol):
    """What the engine reads from an event (journeys.events.Touchpoint fits)."""

    @property
    def event_id(self) -> str: ...
    @property
    def occurred_at(self) -> int: ...
    @property
    def channel(self) -> str: ...
    @property
    def type(self) -> str: ...


class JourneyEngine(JourneySettler):
    """Applies a customer's events to its `CustomerJourneys`; stateless itself."""

    def __init__(
        self, definitions: Iterable[JourneyDefinition], *, definitions_version: str = "",
        path_cap: int = PATH_CAP,
    ) -> None:
        super().__init__(definitions, definitions_version=definitions_version,
                         path_cap=path_cap)
        self._entries = frozenset(d.steps[0] for d in self.definitions)
        # how long a handover source is remembered (duplicate handovers after a crash)
        self.merge_memory_ms = max((d.conversion_window_ms for d in self.definitions),
                                   default=0)


    def tail_event(self, ev: JourneyEventLike) -> TailEvent:
        """The stored form of an event; only entry events keep their context. The
        journey value: a `value` attribute, else a usable `properties.value`."""
        ctx = getattr(ev, "context", None) if ev.type in self._entries else None
        value = getattr(ev, "value", None)
        if value is None and (props := getattr(ev, "properties", None)):
            value = event_value(props)[0]
        return (ev.occurred_at, ev.event_id, ev.type, ev.channel, ctx or None, value)

    def apply(
        self,
        customer: str,
        state: CustomerJourneys,
        events: Iterable[JourneyEventLike],
        *,
        watermark: int,
        high_ms: int | None = None,
    ) -> JourneyDelta:
        """Apply events in any order (mutating `state`), then settle up to `watermark`.

        `watermark` is the partition clock's value after the batch (stream.engine.sessions.
        EventClock); the caller drops events behind it as late before calling.
        """
        tail_event = self.tail_event
        return self.apply_tail(customer, state, [tail_event(e) for e in events],
                               watermark=watermark, high_ms=high_ms)

    def apply_tail(
        self, customer: str, state: CustomerJourneys, events: Iterable[TailEvent], *,
        watermark: int, high_ms: int | None = None,
    ) -> JourneyDelta:
        """`apply` for events already in stored form (the stream's hot path)."""
        delta = JourneyDelta()
        tail = state.tail
        ids = {e[1] for e in tail}
        checkpoint = state.checkpoint
        applied = 0
        for ev in events:
            if ev[0] < checkpoint:
                delta.late += 1
            elif ev[1] in ids:
                delta.duplicates += 1
            else:
                ids.add(ev[1])
                insort(tail, ev)
                applied += 1
        delta.applied = applied
        if high_ms is not None:
            state.high_ms = max(state.high_ms, high_ms)
        if applied or watermark > checkpoint:
            self._settle(customer, state, watermark, delta, [])
        return delta

    def advance(self, customer: str, state: CustomerJourneys, *, watermark: int) -> JourneyDelta:
        """Timer path: settle with no new events (abandons instances whose deadline the
        watermark reached while the customer was idle)."""
        return self.apply_tail(customer, state, (), watermark=watermark)

    def wake_at(self, state: CustomerJourneys) -> int | None:
        """Smallest watermark at which `advance` would emit something; None: never."""
        self._decode(state)
        times = [run.deadline(spec) for d, spec in self._specs
                 if (run := state.open.get(d.name)) is not None]
        if state.tail:
            times.append(state.tail[0][0] + 1)
        if state.merged:
            times.append(min(state.merged.values()))
        return min(times, default=None)

    def current(
        self, customer: str, state: CustomerJourneys
    ) -> list[tuple[JourneyDefinition, Run]]:
        """The non-final instances as of the state (checkpoint replayed with the tail;
        copies: the state is not changed)."""
        self._decode(state)
        if not state.tail:
            return [(d, run.copy()) for d, run in self._current(customer, state)]
        return self._current(customer, state)

    def reemit(self, customer: str, state: CustomerJourneys) -> list[InstanceRow]:
        """Rows of every non-final instance as the state has them, with new versions:
        after a restart the last write of such rows may not have happened (they are
        written after the state is stored, stream.stages.customers)."""
        rows = []
        for d, run in self.current(customer, state):
            state.seq += 1
            rows.append(self._row(d, customer, run, state.seq))
            state.emitted[run.iid] = [d.name, run.digest(), run.opened]
        return rows

    # ------------------------------------------------------------- stitching
    def release(self, customer: str, state: CustomerJourneys) -> tuple[list[TailEvent],
                                                                        JourneyDelta]:
        """Hand this key's non-final journeys over (it was linked to a customer): its
        open runs' events and the tail, in reference order; the delta retracts every
        non-final instance shown so far (they reappear under the customer). The state
        is emptied."""
        self._decode(state)
        events: dict[str, TailEvent] = {}
        for run in state.open.values():
            for ev in path_events(run):
                events.setdefault(ev[1], ev)
        for ev in state.tail:
            events.setdefault(ev[1], ev)
        delta = JourneyDelta()
        for iid, (journey, _dg, opened) in sorted(state.emitted.items()):
            state.seq += 1
            delta.retractions.append(Retraction(iid, journey, customer, state.seq, opened,
                                                self._versions.get(journey, "")))
        state.tail, state.open, state.emitted, state.closed_in = [], {}, {}, {}
        return sorted(events.values(), key=lambda e: (e[0], e[1])), delta

    def openings(self, state: CustomerJourneys) -> list[list[Any]]:
        """[journey, opening event id, furthest step observed] of each open run (call
        before `release`): the customer retracts those its replay no longer opens."""
        self._decode(state)
        return [[name, run.path[0][1], len(run.reached) - 1]
                for name, run in sorted(state.open.items()) if run.reached]

    def path_events(self, state: CustomerJourneys) -> list[TailEvent]:
        """The settled events the open runs know (their paths: context only for the
        opening event): with the tail, what a handed-over copy is compared with
        (stream.stages.duplicates.handed_over)."""
        self._decode(state)
        return [e for _name, run in sorted(state.open.items()) for e in path_events(run)]

    def replayable_ids(self, state: CustomerJourneys) -> set[str]:
        """Ids of settled path events the open runs can replay without (no run is
        capped, and no closed instance holds the event): a handed-over copy that
        outranks one of them may replace it (stream.stages.duplicates `unsettled`)."""
        self._decode(state)
        runs = list(state.open.values())
        if any(run.truncated for run in runs):
            return set()
        closed = {eid for ids in state.closed_in.values() for eid in ids}
        return {e[1] for run in runs for e in path_events(run)} - closed

    def closed_events(self, state: CustomerJourneys) -> dict[str, list[str]]:
        """Definition -> ids of handed-over events that were in one of its closed
        instances (call before `release`): the customer does not replay them for that
        definition, so an event is in at most one instance of a definition."""
        return {name: list(ids) for name, ids in sorted(state.closed_in.items())}

    def capped_runs(self, state: CustomerJourneys) -> dict[str, list[Any]]:
        """Open runs with a capped path, stored form (call before `release`): their
        events beyond the cap are gone, so the customer continues them from their
        summary (stream.engine.merge)."""
        self._decode(state)
        return {name: encode_run(run) for name, run in sorted(state.open.items())
                if run.truncated}

    def absorb(
        self, customer: str, state: CustomerJourneys, source: str,
        events: Sequence[TailEvent], *, watermark: int, linked_at: int = NO_WATERMARK,
        openings: Sequence[Sequence[Any]] = (), runs: Mapping[str, list[Any]] | None = None,
        closed: Mapping[str, Sequence[str]] | None = None, dropped: Collection[str] = (),
    ) -> JourneyDelta:
        """Merge another key's released events into this customer's journeys.

        Events at/after the checkpoint join the tail. Earlier ones are replayed with
        each open run's path from the earliest of them, so the open and closed instances
        are the reference's over both sides' non-final events; `runs` are the other
        key's capped runs (`capped_runs`), continued rather than replayed
        (stream.engine.merge); `closed` (`closed_events`) names, per definition, the
        events not replayed for it (they were in its closed instances there);
        `dropped`: ids of this customer's settled copies that a released copy outranks
        (stream.stages.duplicates `unsettled`), left out of its runs' replay. A
        repeated handover from the same source (re-delivery after a crash) is ignored.
        """
        delta = JourneyDelta()
        state.waiting.pop(source, None)
        if source in state.merged:
            delta.duplicates += len(events)
            return delta
        self._decode(state)
        if events or linked_at > NO_WATERMARK:
            last = max([linked_at, *(e[0] for e in events)])
            state.merged[source] = last + self.merge_memory_ms
        ids = {e[1] for e in state.tail}
        early: list[TailEvent] = []
        for ev in events:
            if ev[1] in ids:
                delta.duplicates += 1
            elif ev[0] >= state.checkpoint:
                ids.add(ev[1])
                insort(state.tail, ev)
                delta.applied += 1
            else:
                early.append(ev)
        final: list[tuple[JourneyDefinition, Run]] = []
        # the replay may merge this customer's own open runs into an earlier one too
        own = self.openings(state) if early else []
        if early:
            delta.applied += len(early)
            for d, spec in self._specs:
                other = (runs or {}).get(d.name)
                left_out = set((closed or {}).get(d.name, ()))
                mine = [e for e in early if e[1] not in left_out] if left_out else early
                base, merged = merge_plan(d.name, customer, state.open.pop(d.name, None),
                                          decode_run(other, spec) if other else None, mine,
                                          drop=dropped)
                cur = self._fold(d, spec, customer, base, merged, final, delta)
                if cur is not None:
                    state.open[d.name] = cur
        self._settle(customer, state, max(watermark, state.checkpoint), delta, final,
                     force=True)
        if openings or own:  # runs closed by the replay are in `final`, the rest current
            alive = {*((d.name, run.path[0][1]) for d, run in final),
                     *((d.name, run.path[0][1]) for d, run in self._current(customer, state))}
            for journey, opening, furthest in [*openings, *own]:
                if (journey, opening) not in alive:  # merged into an earlier run here
                    delta.reached.append(retraction(journey, opening, int(furthest)))
        # what the merge observes became true at the link time (StepReached.as_of)
        delta.reached = [replace(o, as_of=max(watermark, o.reached_at_ms))
                         for o in delta.reached]
        return delta

    def _row(self, d: JourneyDefinition, customer: str, r: Run, version: int) -> InstanceRow:
        return instance_row(d, customer, r, version, self.definitions_version)
