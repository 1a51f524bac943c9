"""Per-customer sessionizer (DESIGN.md "Session"), pure: no Kafka, no warehouse.

A session is a maximal run of a customer's events, ordered by occurred_at, with no gap
>= `gap_ms` between consecutive events. Events arrive out of order and duplicated, so
the sessionizer works on intervals: an event joins every open session whose interval
widened by the gap (exclusive) contains it, merging them. Kept per open session:
counts, bounds, the earliest event, the first occurrence of each channel, and per event
only its id, time and channel (what lets a handed-over copy be taken out again at a
link: `Sessionizer.absorb`), so a customer's state stays small and is serialized as
orjson bytes.

Event-time progress comes from a per-partition `EventClock` owned by the caller:
events older than its watermark are late and must not be applied (the caller counts
them and still writes them to the raw table). A session whose end + gap the watermark
has passed can no longer change (any event that could touch it would be late), so it
is dropped from the state: it is final and was already emitted.

Each state also keeps the watermark it was last written with, and events of that
customer older than it are late too. In steady state this changes nothing (the clock
only moves forward). After a restart the clock starts again from the re-delivered
events, and this floor is what keeps a re-delivered, already applied event whose id was
dropped (or whose session was finalized) from being applied twice; events the old
worker never applied arrived after the floor was set, so they are judged no more
strictly than before.

The state, its rows and its bytes live in stream.engine.session_state. Output rows
are upserts for a ReplacingMergeTree(version) table: the session id is a hash of
(customer key, event id of the session's earliest event); the version comes from the
customer's counter (`versions`, session_state.VersionCounter: the stream passes the
journeys' `seq`), one step per row, so an id's later row always wins, whatever its
content. An id that stops being the earliest (merge, earlier late event, handover)
gets a deletion row (`deleted = 1`) at a counter version too, not a version above all
others: a later row can bring the id back (docs/semantics.md "Ordering and
duplicates").
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from stream.engine.session_state import (
    CustomerState,
    OpenSession,
    SessionRow,
    VersionCounter,
    decode_sessions,
    encode_sessions,
)


class EventLike(Protocol):
    """What the sessionizer reads from an event (journeys.events.Touchpoint fits)."""

    @property
    def event_id(self) -> str: ...
    @property
    def occurred_at(self) -> int: ...
    @property
    def channel(self) -> str: ...


@dataclass(slots=True)
class SessionDelta:
    """Rows to write after applying events: changed sessions and vanished ids."""

    upserts: list[SessionRow] = field(default_factory=list)
    deletions: list[SessionRow] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    late: int = 0  # behind this customer's own watermark floor

    def rows(self) -> list[SessionRow]:
        return [*self.upserts, *self.deletions]

    def extend(self, other: SessionDelta) -> None:
        self.upserts.extend(other.upserts)
        self.deletions.extend(other.deletions)
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.late += other.late


class Sessionizer:
    """Applies a customer's (non-late) events to its state; stateless itself."""

    def __init__(self, gap_ms: int) -> None:
        if gap_ms <= 0:
            raise ValueError("session gap must be positive")
        self.gap_ms = gap_ms

    def apply(
        self,
        customer_key: str,
        state: CustomerState,
        events: Iterable[EventLike],
        *,
        watermark: int,
        versions: VersionCounter,
        taken_out: Collection[str] = (),
    ) -> SessionDelta:
        """Apply events in any order (mutating `state`), then drop what is final; rows
        take their versions from `versions` (bumped once per row). `taken_out`: ids of
        applied copies that lost to a new copy (stream.stages.duplicates.first_copies),
        taken out of their sessions first.

        `watermark` must be the clock's value after the batch: events are checked for
        lateness against the clock by the caller as they arrive, finality only after
        all are applied. Events behind the state's own floor are skipped as late here.
        """
        floor = state.watermark
        watermark = max(watermark, floor)
        before = {s.first_id: s.count for s in state.sessions}
        last_seen: dict[str, OpenSession] = {s.first_id: s for s in state.sessions}
        vanished: set[str] = set()
        shown: dict[str, tuple[Any, ...]] = {}
        delta = SessionDelta()
        sessions = state.sessions = [s.copy() for s in state.sessions]
        self._take_out(sessions, taken_out, vanished, last_seen, shown)
        seen = state.seen()
        for ev in events:
            eid, t = ev.event_id, ev.occurred_at
            if t < floor:
                delta.late += 1
                continue
            if eid in seen:
                delta.duplicates += 1
                continue
            seen.add(eid)
            delta.applied += 1
            self._insert(sessions, OpenSession(t, eid, t, 1, {ev.channel: (t, eid)}, [eid],
                                               [t], bytearray(b"0")), vanished, last_seen)
        self._finish(customer_key, state, before, last_seen, vanished, watermark, delta,
                     versions, shown)
        return delta

    def _take_out(self, sessions: list[OpenSession], drop: Collection[str],
                  vanished: set[str], last_seen: dict[str, OpenSession],
                  shown: dict[str, tuple[Any, ...]]) -> None:
        """Take the events `drop` names out of the sessions holding them (their bounds,
        count and channels recomputed; split where one bridged a gap: OpenSession.
        without). `shown` gets what every open session's row showed before, so
        `_finish` writes a session whose row changed even when its count ends up as
        before (a copy replaced by another of other time or channel, merged on)."""
        if not drop:
            return
        shown.update((s.first_id, _shown(s)) for s in sessions)
        ids = set(drop)
        out: list[OpenSession] = []
        for s in sessions:
            if ids.isdisjoint(s.ids):
                out.append(s)
                continue
            vanished.add(s.first_id)
            for piece in s.without(ids, self.gap_ms):
                vanished.discard(piece.first_id)
                last_seen[piece.first_id] = piece.snapshot()
                out.append(piece)
        out.sort(key=lambda s: s.start)
        sessions[:] = out

    def _insert(self, sessions: list[OpenSession], new: OpenSession, vanished: set[str],
                last_seen: dict[str, OpenSession]) -> None:
        """Add a session (one event, or a handed-over interval), merging every session
        closer than the gap to it. The merge goes into the session with the most ids (an
        event joining a long session copies nothing: measured, copying a 200k-event
        session's ids per event made one customer's backlog quadratic)."""
        gap = self.gap_ms
        keep: list[OpenSession] = []
        near: list[OpenSession] = [new]
        for s in sessions:
            if s.start - gap < new.end and new.start < s.end + gap:
                near.append(s)
                vanished.add(s.first_id)
            else:
                keep.append(s)
        into = max(near, key=lambda s: len(s.ids))
        for s in near:
            if s is not into:
                into.absorb(s)
        keep.append(into)
        keep.sort(key=lambda s: s.start)
        sessions[:] = keep
        vanished.discard(into.first_id)
        last_seen[into.first_id] = into.snapshot()

    def _finish(self, customer_key: str, state: CustomerState, before: dict[str, int],
                last_seen: dict[str, OpenSession], vanished: set[str], watermark: int,
                delta: SessionDelta, versions: VersionCounter,
                shown: dict[str, tuple[Any, ...]] | None = None) -> None:
        gap = self.gap_ms
        sessions = state.sessions
        current = {s.first_id for s in sessions}
        for s in sessions:
            if before.get(s.first_id) != s.count or (
                    shown and shown.get(s.first_id) != _shown(s)):
                versions.seq += 1
                delta.upserts.append(s.row(customer_key, versions.seq))
        for fid in sorted(vanished - current):
            versions.seq += 1
            delta.deletions.append(last_seen[fid].row(customer_key, versions.seq,
                                                       deleted=True))
        # final sessions, and the ids of their events, can never change again
        sessions[:] = [s for s in sessions if s.end + gap > watermark]
        state.watermark = watermark

    def wake_at(self, state: CustomerState) -> int | None:
        """Smallest watermark at which advancing would shrink the state (cleanup only:
        sessions need no output when they become final)."""
        return min((s.end + self.gap_ms for s in state.sessions), default=None)

    @staticmethod
    def reemit(customer_key: str, state: CustomerState, *, versions: VersionCounter,
               ) -> list[SessionRow]:
        """Rows of the open sessions again, at new versions (a value loaded in a new
        generation: their last write may have been lost, stream.stages.customers)."""
        rows = []
        for s in state.sessions:
            versions.seq += 1
            rows.append(s.row(customer_key, versions.seq))
        return rows

    # ------------------------------------------------------------- stitching
    def release(self, customer_key: str, state: CustomerState, *, versions: VersionCounter,
                ) -> tuple[list[Any], SessionDelta]:
        """Hand the open sessions (with their events' ids) over (the key was linked to a
        customer); deletions for the sessions, at this key's versions: they reappear
        under the customer (other ids, its own counter). The state is emptied."""
        delta = SessionDelta()
        for s in state.sessions:
            versions.seq += 1
            delta.deletions.append(s.row(customer_key, versions.seq, deleted=True))
        payload = encode_sessions(state.sessions)
        state.sessions = []
        return payload, delta

    def absorb(self, customer_key: str, state: CustomerState, payload: list[Any], *,
               watermark: int, versions: VersionCounter,
               left_out: Collection[str] = (), taken_out: Collection[str] = (),
               ) -> SessionDelta:
        """Merge released sessions into this customer's: intervals closer than the gap
        join. An event id this customer counts already, or one `left_out` names (the
        customer stage's choice: stream.stages.duplicates.handed_over), is taken out of
        the released session first, with its time. `taken_out`: the customer's own
        copies that a handed-over copy outranks, taken out of the customer's sessions
        first; sessions keep the copy journeys keep (docs/semantics.md "Ordering and
        duplicates")."""
        theirs = decode_sessions(payload)
        watermark = max(watermark, state.watermark)
        before = {s.first_id: s.count for s in state.sessions}
        last_seen = {s.first_id: s for s in state.sessions}
        vanished: set[str] = set()
        shown: dict[str, tuple[Any, ...]] = {}
        delta = SessionDelta()
        sessions = state.sessions = [s.copy() for s in state.sessions]
        self._take_out(sessions, taken_out, vanished, last_seen, shown)
        # a session the take-out ended earlier may be final at the watermark: it joins
        # nothing handed over (the customer settled to the link time: without the copy
        # it would have closed before), `_finish` writes it once more
        closed = [s for s in sessions if s.end + self.gap_ms <= watermark]
        if closed:
            sessions[:] = [s for s in sessions if s.end + self.gap_ms > watermark]
        seen = state.seen()
        seen.update(x for s in closed for x in s.ids)
        seen.update(left_out)
        kept: list[OpenSession] = []
        for s in theirs:
            dups = {eid for eid in s.ids if eid in seen}
            if dups:  # counted here already: count it once, as the customer has it
                delta.duplicates += len(dups)
                kept.extend(s.without(dups, self.gap_ms))
            else:
                kept.append(s)
            seen.update(s.ids)
        for s in kept:
            if s.count > 0:
                delta.applied += s.count
                self._insert(sessions, s, vanished, last_seen)
        if closed:
            sessions.extend(closed)
            sessions.sort(key=lambda s: s.start)
        self._finish(customer_key, state, before, last_seen, vanished, watermark, delta,
                     versions, shown)
        return delta


def _shown(s: OpenSession) -> tuple[Any, ...]:
    """What a session's row shows (its id aside)."""
    return (s.start, s.end, s.count, sorted(s.channels.items()))
