"""The settling core of the journey engine (stream.engine.journeys), pure.

Why a module of its own: settling is the one step every path of the engine ends in
(new events, a timer visit, an absorbed handover). Events before the watermark are
folded, in reference order, into the checkpoint's open run per definition; runs they
close and runs whose deadline the watermark reached are final (emitted once more and
forgotten); the tail is replayed from a copy of the checkpoint for the current
instances; and rows, retractions and `StepReached` observations are emitted for what
changed since the last emit. `JourneyEngine` adds the public operations on top.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

from journeys.definitions import JourneyDefinition
from stream.engine.journey_state import CustomerJourneys
from stream.engine.outputs import JourneyDelta, Retraction, StepReached
from stream.engine.rows import instance_row
from stream.engine.runs import PATH_CAP, Run, Spec, TailEvent, decode_run, feed


class JourneySettler:
    """The compiled definitions and the settling of a customer's journeys; stateless
    itself (the base of stream.engine.journeys.JourneyEngine)."""

    def __init__(
        self, definitions: Iterable[JourneyDefinition], *, definitions_version: str = "",
        path_cap: int = PATH_CAP,
    ) -> None:
        self.definitions: tuple[JourneyDefinition, ...] = tuple(definitions)
        self.definitions_version = definitions_version
        self._names = frozenset(d.name for d in self.definitions)
        # the version each journey's rows carry (retractions too: the same key)
        self._versions = {d.name: d.version for d in self.definitions}
        self._specs = [(d, Spec(d, path_cap)) for d in self.definitions]

    def _decode(self, state: CustomerJourneys) -> None:
        opened = state.open
        if not opened:
            return
        for d, spec in self._specs:
            r = opened.get(d.name)
            if r is not None and r.__class__ is not Run:
                opened[d.name] = decode_run(r, spec)
        if not self._names.issuperset(opened):
            for name in [n for n in opened if n not in self._names]:
                del opened[name]  # definition removed: its state is meaningless

    def _fold(
        self, d: JourneyDefinition, spec: Spec, customer: str, cur: Run | None,
        settled: Sequence[TailEvent], final: list[tuple[JourneyDefinition, Run]],
        delta: JourneyDelta,
    ) -> Run | None:
        """Feed settled events into `cur`; closes go to `final`, observations to delta."""
        for ev in settled:
            if cur is None:
                cur, closed, opened = feed(spec, customer, None, ev)
                if opened is not None:
                    self._observe(d, opened, 0, delta)
                continue
            prev = cur
            before = len(prev.reached)
            cur, closed, opened = feed(spec, customer, prev, ev)
            if closed is not None:
                final.append((d, closed))
            if len(prev.reached) > before:
                self._observe(d, prev, before, delta)
            if opened is not None:
                self._observe(d, opened, 0, delta)
        return cur

    def _settle(
        self, customer: str, state: CustomerJourneys, watermark: int, delta: JourneyDelta,
        final: list[tuple[JourneyDefinition, Run]], *, force: bool = False,
    ) -> None:
        self._decode(state)
        opened = state.open
        if watermark > state.checkpoint or force:
            tail = state.tail
            cut = bisect_left(tail, (watermark,)) if tail else 0
            settled = tail[:cut]
            if cut:
                state.tail = tail[cut:]
            for d, spec in self._specs:
                # popped and put back: the open runs stay in definition order (state bytes)
                cur = opened.pop(d.name, None)
                if settled:
                    cur = self._fold(d, spec, customer, cur, settled, final, delta)
                if cur is not None:
                    deadline = cur.deadline(spec)
                    if watermark >= deadline:
                        cur.status, cur.closed_at = "abandoned", deadline
                        final.append((d, cur))
                    else:
                        opened[d.name] = cur
            state.checkpoint = watermark
            if state.merged:
                state.merged = {k: w for k, w in state.merged.items() if w > watermark}
        if final:  # only a close adds ids, and only a close takes a run's ids away
            _remember_closed(state, final)
        emitted = state.emitted
        upserts = delta.upserts
        version = self.definitions_version
        for d, run in final:
            emitted.pop(run.iid, None)
            state.seq += 1
            row = instance_row(d, customer, run, state.seq, version)
            upserts.append(row)
            delta.closed.append(row)
        live: dict[str, list[Any]] = {}
        for d, run in self._current(customer, state):
            dg = run.digest()
            iid = run.iid
            live[iid] = [d.name, dg, run.opened]
            old = emitted.get(iid)
            if old is None or old[1] != dg:
                state.seq += 1
                upserts.append(instance_row(d, customer, run, state.seq, version))
        if not live.keys() >= emitted.keys():  # (no set built: a view comparison)
            for iid, (journey, _dg, opened_at) in emitted.items():
                if iid not in live and journey in self._names:
                    state.seq += 1
                    delta.retractions.append(Retraction(iid, journey, customer, state.seq,
                                                        opened_at, self._versions[journey]))
        state.emitted = live

    def _current(self, customer: str, state: CustomerJourneys,
                 ) -> list[tuple[JourneyDefinition, Run]]:
        """`current` on a decoded state. With no tail the open runs are returned as
        they are (not copied: the caller only reads them)."""
        opened = state.open
        tail = state.tail
        out: list[tuple[JourneyDefinition, Run]] = []
        if not tail:
            for d, _spec in self._specs:
                cur = opened.get(d.name)
                if cur is not None:
                    out.append((d, cur))
            return out
        for d, spec in self._specs:
            cur = opened.get(d.name)
            if cur is not None:
                cur = cur.copy()
                out.append((d, cur))
            for ev in tail:
                cur, _closed, new = feed(spec, customer, cur, ev)
                if new is not None:
                    out.append((d, new))
        return out

    @staticmethod
    def _observe(d: JourneyDefinition, run: Run, before: int, delta: JourneyDelta) -> None:
        """Observations name the run by its opening event id, not its instance id: a
        stitched device's journey settled under the device and replayed under the
        customer is then one entry for the evaluator, not a dropped one plus a new one."""
        opening = run.path[0][1]
        for s in range(before, len(run.reached)):
            t, channel = run.reached[s]
            delta.reached.append(StepReached(d.name, opening, s, t, channel))


def _remember_closed(state: CustomerJourneys,
                     final: Sequence[tuple[JourneyDefinition, Run]]) -> None:
    """Keep, per definition, the events of its instances closed here that are still in
    another definition's open run (a release hands those over: `closed_events`); forget
    those no open run holds any more. Runs only close on settled events, and settled
    events are only in the checkpoint's open runs, so those are all to look at."""
    in_open = {name: _event_ids(run) for name, run in state.open.items()
               if isinstance(run, Run)}
    held = set().union(*in_open.values()) if in_open else set()
    kept: dict[str, set[str]] = {name: set(ids) & held for name, ids in state.closed_in.items()}
    for d, run in final:
        others = held - in_open.get(d.name, set())
        ids = _event_ids(run) & others
        if ids:
            kept.setdefault(d.name, set()).update(ids)
    state.closed_in = {name: sorted(ids) for name, ids in sorted(kept.items()) if ids}


def _event_ids(run: Run) -> set[str]:
    """Ids of the run's known events (`path_events`, without building the events)."""
    ids = {p[1] for p in run.path}
    if run.truncated:
        ids.add(run.last[1])
    return ids
