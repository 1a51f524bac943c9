"""Recompute a customer's sessions and journeys from its whole raw history, pure
(`journeys replay`, docs/operations.md "Replay").

The stream sees events in arrival order and leaves late ones out; a replay sees every
stored event and feeds them to the same engines (stream.engine.sessions, .journeys) in
event-time order, with the identity stitching of docs/semantics.md "Identity
stitching" played at each link's event time: a linked device's events before its link
time are its own, settled up to the link; what is open then is released to the
customer, which has settled its own events up to the same time and absorbs it. The
result is what a stream with a perfect clock gives, i.e. the reference
(tests/reference/stitching_ref.py `split`), whatever order the data arrived in.

A *group* is one stream key and the devices linked to it: a customer id, or an
anonymous id that was never linked. Links are derived from the events themselves
(the earliest event, by time then event id, that carries both ids), as the documented
semantics say; `group_key` says which group an event belongs to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from stream.engine.identity import is_junk_id
from stream.engine.journey_state import CustomerJourneys
from stream.engine.journeys import JourneyEngine
from stream.engine.outputs import InstanceRow, JourneyDelta, StepReached, fold_rows
from stream.engine.session_state import CustomerState, SessionRow
from stream.engine.sessions import SessionDelta, Sessionizer


class RawEvent(NamedTuple):
    """A stored touchpoint as the replay reads it ('' for a missing id)."""

    event_id: str
    type: str
    channel: str
    occurred_at: int
    customer_id: str
    anonymous_id: str
    context: dict[str, Any] | None = None
    value: float | None = None  # usable properties.value (journeys.events.event_value)


Link = tuple[str, int]  # (customer id, link time in event ms)


def _ok(value: str | None) -> bool:
    return not is_junk_id(value)


def earliest_links(pairs: Iterable[tuple[str, str, int, str]]) -> dict[str, Link]:
    """Device -> (customer, link time) from (anonymous id, customer id, time, event id)
    of events carrying both: the customer of the earliest such event (time, then event
    id) wins, linked at that time. Junk ids never link."""
    best: dict[str, tuple[int, str, str]] = {}
    for anon, cust, t, eid in pairs:
        if _ok(anon) and _ok(cust):
            key = (t, eid, cust)
            old = best.get(anon)
            if old is None or key < old:
                best[anon] = key
    return {anon: (cust, t) for anon, (t, _eid, cust) in best.items()}


def group_key(customer_id: str, anonymous_id: str, links: Mapping[str, Link]) -> str | None:
    """The group an event belongs to (its customer, else its device's customer, else the
    device); None for an event with placeholder ids only (it belongs to nobody)."""
    if _ok(customer_id):
        return customer_id
    if _ok(anonymous_id):
        link = links.get(anonymous_id)
        return link[0] if link is not None else anonymous_id
    return None


def owner(ev: RawEvent, links: Mapping[str, Link]) -> str | None:
    """The stream key an event is applied under: a linked device's anonymous events
    before its link time stay the device's (docs/semantics.md "Identity stitching")."""
    if _ok(ev.customer_id):
        return ev.customer_id
    if _ok(ev.anonymous_id):
        link = links.get(ev.anonymous_id)
        if link is not None and ev.occurred_at >= link[1]:
            return link[0]
        return ev.anonymous_id
    return None


@dataclass
class GroupResult:
    """A group's rows as the warehouse would hold them (max version per id), and the
    drop-off observations its journeys made."""

    instances: dict[str, InstanceRow] = field(default_factory=dict)  # live ones by id
    sessions: dict[str, SessionRow] = field(default_factory=dict)  # live ones by id
    reached: list[StepReached] = field(default_factory=list)
    events: int = 0


class _Fold:
    """Folds deltas like the warehouse would: highest version per id wins (sessions and
    instances of a key share its counter, `CustomerJourneys.seq`, as in the stream)."""

    def __init__(self) -> None:
        self.result = GroupResult()
        self._iversions: dict[str, int] = {}
        self._sessions: dict[str, SessionRow] = {}

    def journeys(self, delta: JourneyDelta) -> None:
        fold_rows(self.result.instances, delta, versions=self._iversions)
        self.result.reached.extend(delta.reached)

    def sessions(self, delta: SessionDelta) -> None:
        for row in delta.rows():
            old = self._sessions.get(row.session_id)
            if old is None or row.version > old.version:
                self._sessions[row.session_id] = row

    def done(self) -> GroupResult:
        self.result.sessions = {k: r for k, r in self._sessions.items() if not r.deleted}
        return self.result


def recompute_group(
    key: str, events: Sequence[RawEvent], links: Mapping[str, Link], *,
    engine: JourneyEngine, sessionizer: Sessionizer, horizon: int,
) -> GroupResult:
    """Sessions and journey instances of group `key` at watermark `horizon`.

    `events`: every stored event of the group (any order, duplicates allowed);
    `links`: device -> (customer, time) for at least the group's devices. Rows whose
    sessions or journeys are still open at `horizon` come out as open, as a stream whose
    watermark reached `horizon` would show them.
    """
    fold = _Fold()
    unique = sorted({e.event_id: e for e in events}.values(),
                    key=lambda e: (e.occurred_at, e.event_id))
    fold.result.events = len(unique)
    owned: dict[str, list[RawEvent]] = {}
    for e in unique:
        who = owner(e, links)
        if who is not None:
            owned.setdefault(who, []).append(e)
    devices = sorted((at, dev) for dev, (cust, at) in links.items()
                     if cust == key and dev != key and dev in owned)
    handed: dict[str, tuple[list[Any], JourneyHandover]] = {}
    for at, dev in devices:
        handed[dev] = _device(dev, owned[dev], min(at, horizon), engine, sessionizer, fold)
    s_state, j_state = CustomerState(), CustomerJourneys()
    mine = owned.get(key, [])
    i = 0
    for at, dev in devices:
        w = min(at, horizon)
        j = i
        while j < len(mine) and mine[j].occurred_at < at:
            j += 1
        _apply(key, mine[i:j], w, s_state, j_state, engine, sessionizer, fold)
        i = j
        payload, h = handed[dev]
        fold.sessions(sessionizer.absorb(key, s_state, payload, watermark=w,
                                         versions=j_state))
        fold.journeys(engine.absorb(key, j_state, dev, h.events, watermark=w, linked_at=at,
                                    openings=h.openings, runs=h.runs, closed=h.closed))
    _apply(key, mine[i:], horizon, s_state, j_state, engine, sessionizer, fold)
    return fold.done()


class JourneyHandover(NamedTuple):
    """What a device hands its customer at the link (stream.stages.envelopes)."""

    events: list[Any]
    openings: list[list[Any]]
    runs: dict[str, list[Any]]
    closed: dict[str, list[str]]  # per definition: events of its closed instances


def _apply(key: str, events: Sequence[RawEvent], watermark: int, s_state: CustomerState,
           j_state: CustomerJourneys, engine: JourneyEngine, sessionizer: Sessionizer,
           fold: _Fold) -> None:
    fold.sessions(sessionizer.apply(key, s_state, events, watermark=watermark,
                                    versions=j_state))
    fold.journeys(engine.apply(key, j_state, events, watermark=watermark))


def _device(dev: str, events: Sequence[RawEvent], watermark: int, engine: JourneyEngine,
            sessionizer: Sessionizer, fold: _Fold) -> tuple[list[Any], JourneyHandover]:
    """A linked device up to its link: settle, then release what is still open."""
    s_state, j_state = CustomerState(), CustomerJourneys()
    _apply(dev, events, watermark, s_state, j_state, engine, sessionizer, fold)
    openings, runs = engine.openings(j_state), engine.capped_runs(j_state)
    closed = engine.closed_events(j_state)
    payload, s_delta = sessionizer.release(dev, s_state, versions=j_state)
    fold.sessions(s_delta)
    released, j_delta = engine.release(dev, j_state)
    fold.journeys(j_delta)
    return payload, JourneyHandover(released, openings, runs, closed)
