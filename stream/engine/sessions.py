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

Output rows are idempotent upserts for a ReplacingMergeTree(version) table: the
session id is a hash of (customer key, event id of the session's earliest event), the
version is the event count. Sessions only ever grow, so an id's content is fixed by
its count and an id that stops being the earliest (merge, earlier late event) never
comes back: it gets a tombstone row with version TOMBSTONE_VERSION.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import orjson

from journeys.versions import TOMBSTONE_VERSION
from stream.eventtime.watermarks import NO_WATERMARK

CH0 = 48  # byte of channel index 0 ("0"): stored as text (latin-1), one char per event
MAX_CHANNELS = 255 - CH0
_STATE_FORMAT = 2
"""2: sessions carry their events' times and channels (see `OpenSession`); 1 (read too):
without them."""

SESSION_COLUMNS: tuple[str, ...] = (
    "session_id", "customer_id", "started_at_ms", "ended_at_ms", "started_at",
    "events", "channels", "first_channel", "version", "deleted",
)


class EventLike(Protocol):
    """What the sessionizer reads from an event (journeys.events.Touchpoint fits)."""

    @property
    def event_id(self) -> str: ...
    @property
    def occurred_at(self) -> int: ...
    @property
    def channel(self) -> str: ...


class SessionRow(NamedTuple):
    """One row of the `sessions` table, in SESSION_COLUMNS order."""

    session_id: str
    customer_id: str
    started_at_ms: int
    ended_at_ms: int
    started_at: datetime
    events: int
    channels: list[str]
    first_channel: str
    version: int
    deleted: int


def session_id(customer_key: str, first_event_id: str) -> str:
    """Deterministic id: the same events give the same id on every replay and worker."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(customer_key.encode())
    digest.update(b"\x1f")
    digest.update(first_event_id.encode())
    return digest.hexdigest()


@dataclass(slots=True)
class OpenSession:
    """A session that may still change. `first_id` is its earliest event (ties: event_id)."""

    start: int
    first_id: str
    end: int
    count: int
    # channel -> (time, event_id) of its earliest event in the session
    channels: dict[str, tuple[int, str]]
    ids: list[str]  # its events' ids (duplicates are recognised by them)
    # per id (same order): its time, and its channel as a byte CH0 + its index in
    # `channels` (the dict's order); None when unknown (a session stored or handed
    # over in format 1). What lets a handed-over copy be taken out again (`without`).
    times: list[int] | None = None
    cix: bytearray | None = None

    def absorb(self, other: OpenSession) -> None:
        if (other.start, other.first_id) < (self.start, self.first_id):
            self.start, self.first_id = other.start, other.first_id
        self.end = max(self.end, other.end)
        self.count += other.count
        self.ids.extend(other.ids)
        for ch, first in other.channels.items():
            mine = self.channels.get(ch)
            if mine is None or first < mine:
                self.channels[ch] = first
        if self.times is None or self.cix is None or other.times is None or other.cix is None:
            self.times = self.cix = None  # one side of an older format: unknown
            return
        self.times.extend(other.times)
        theirs = list(other.channels)
        if list(self.channels)[:len(theirs)] == theirs:  # the usual case: same order
            self.cix.extend(other.cix)
        else:
            pos = {ch: i for i, ch in enumerate(self.channels)}
            if len(pos) > MAX_CHANNELS:  # (channels are a configured set: never so)
                self.times = self.cix = None
                return
            table = bytearray(range(256))
            for i, ch in enumerate(theirs):
                table[CH0 + i] = CH0 + pos[ch]
            self.cix.extend(other.cix.translate(table))

    def without(self, drop: set[str], gap_ms: int) -> list[OpenSession]:
        """The session with the events `drop` names taken out: the sessions its other
        events make (none, one, or several when a removed event bridged a gap). With
        times unknown (format 1) only the ids and count can change, its bounds stay."""
        if self.times is None or self.cix is None:
            ids = [eid for eid in self.ids if eid not in drop]
            if not ids:
                return []
            return [OpenSession(self.start, self.first_id, self.end, len(ids),
                                self.channels, ids)]
        names = list(self.channels)
        out: list[OpenSession] = []
        for t, eid, ch in sorted((t, eid, names[c]) for eid, t, c
                                 in zip(self.ids, self.times,
                                        (c - CH0 for c in self.cix), strict=True)
                                 if eid not in drop):
            cur = out[-1] if out else None
            if cur is None or t - cur.end >= gap_ms:
                out.append(OpenSession(t, eid, t, 1, {ch: (t, eid)}, [eid], [t],
                                       bytearray(b"0")))
                continue
            assert cur.times is not None and cur.cix is not None
            cur.end, cur.count = t, cur.count + 1
            cur.ids.append(eid)
            cur.times.append(t)
            if ch not in cur.channels:
                cur.channels[ch] = (t, eid)
            cur.cix.append(CH0 + list(cur.channels).index(ch))
        return out

    def row(self, customer_key: str, *, deleted: bool = False) -> SessionRow:
        ordered = sorted(self.channels, key=self.channels.__getitem__)
        return SessionRow(
            session_id=session_id(customer_key, self.first_id),
            customer_id=customer_key,
            started_at_ms=self.start,
            ended_at_ms=self.end,
            started_at=datetime.fromtimestamp(self.start // 1000, tz=UTC),
            events=self.count,
            channels=ordered,
            first_channel=ordered[0],
            version=TOMBSTONE_VERSION if deleted else self.count,
            deleted=1 if deleted else 0,
        )

    def copy(self) -> OpenSession:
        return OpenSession(self.start, self.first_id, self.end, self.count, dict(self.channels),
                           list(self.ids), None if self.times is None else list(self.times),
                           None if self.cix is None else bytearray(self.cix))

    def snapshot(self) -> OpenSession:
        """A copy for its row only (a tombstone later): without the ids, which a long
        session has many of."""
        return OpenSession(self.start, self.first_id, self.end, self.count, dict(self.channels),
                           [])


@dataclass(slots=True)
class CustomerState:
    """Non-final sessions (sorted, >= gap apart), each with the ids of its events (a copy
    of an event of a final session is late anyway, so those ids go with it). Ids are
    kept for the whole open session, not just its unsettled part: stitching merges a
    device's open sessions into its customer's, and a duplicate delivered once to each
    side must count once (stream.stages.identity routes a copy read after the link to
    the customer)."""

    sessions: list[OpenSession] = field(default_factory=list)
    # the watermark this state was last written with: a per-customer floor for
    # lateness (see the module docstring)
    watermark: int = NO_WATERMARK

    def is_empty(self) -> bool:
        return not self.sessions

    def seen(self) -> set[str]:
        return {eid for s in self.sessions for eid in s.ids}

    def to_obj(self) -> dict[str, Any]:
        return {"f": _STATE_FORMAT, "w": self.watermark, "s": encode_sessions(self.sessions)}

    def dumps(self) -> bytes:
        return orjson.dumps(self.to_obj())

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> CustomerState:
        if obj.get("f") not in (1, _STATE_FORMAT):
            raise ValueError(f"unknown session state format {obj.get('f')!r}")
        return cls(sessions=decode_sessions(obj["s"]), watermark=obj["w"])

    @classmethod
    def loads(cls, data: bytes | None) -> CustomerState:
        return cls.from_obj(orjson.loads(data)) if data else cls()


def encode_sessions(sessions: Iterable[OpenSession]) -> list[Any]:
    """Stored state and handover payload: [start, first id, end, count, channels, ids,
    times, channels of the ids] (the last two absent when unknown: format 1 had none).
    Compact: times relative to the start, channel indexes as one string (chr(48 + i))."""
    return [[s.start, s.first_id, s.end, s.count,
             [[ch, t, eid] for ch, (t, eid) in s.channels.items()], s.ids,
             *(() if s.times is None or s.cix is None else
               (list(map((-s.start).__add__, s.times)), s.cix.decode("latin-1")))]
            for s in sessions]


def decode_sessions(items: list[Any]) -> list[OpenSession]:
    """Both forms of `encode_sessions` (with or without times)."""
    return [
        OpenSession(it[0], it[1], it[2], it[3], {ch: (t, eid) for ch, t, eid in it[4]},
                    list(it[5]), *((list(map(it[0].__add__, it[6])), bytearray(it[7], "latin-1"))
                                   if len(it) > 7 else ()))
        for it in items
    ]


@dataclass(slots=True)
class SessionDelta:
    """Rows to write after applying events: changed sessions and vanished ids."""

    upserts: list[SessionRow] = field(default_factory=list)
    tombstones: list[SessionRow] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    late: int = 0  # behind this customer's own watermark floor

    def rows(self) -> list[SessionRow]:
        return [*self.upserts, *self.tombstones]

    def extend(self, other: SessionDelta) -> None:
        self.upserts.extend(other.upserts)
        self.tombstones.extend(other.tombstones)
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
    ) -> SessionDelta:
        """Apply events in any order (mutating `state`), then drop what is final.

        `watermark` must be the clock's value after the batch: events are checked for
        lateness against the clock by the caller as they arrive, finality only after
        all are applied. Events behind the state's own floor are skipped as late here.
        """
        floor = state.watermark
        watermark = max(watermark, floor)
        before = {s.first_id: s.count for s in state.sessions}
        last_seen: dict[str, OpenSession] = {s.first_id: s for s in state.sessions}
        vanished: set[str] = set()
        delta = SessionDelta()
        sessions = state.sessions = [s.copy() for s in state.sessions]
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
        self._finish(customer_key, state, before, last_seen, vanished, watermark, delta)
        return delta

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
                delta: SessionDelta) -> None:
        gap = self.gap_ms
        sessions = state.sessions
        current = {s.first_id for s in sessions}
        for s in sessions:
            if before.get(s.first_id) != s.count:
                delta.upserts.append(s.row(customer_key))
        for fid in sorted(vanished - current):
            delta.tombstones.append(last_seen[fid].row(customer_key, deleted=True))
        # final sessions, and the ids of their events, can never change again
        sessions[:] = [s for s in sessions if s.end + gap > watermark]
        state.watermark = watermark

    def wake_at(self, state: CustomerState) -> int | None:
        """Smallest watermark at which advancing would shrink the state (cleanup only:
        sessions need no output when they become final)."""
        return min((s.end + self.gap_ms for s in state.sessions), default=None)

    # ------------------------------------------------------------- stitching
    def release(self, customer_key: str, state: CustomerState) -> tuple[list[Any],
                                                                        SessionDelta]:
        """Hand the open sessions (with their events' ids) over (the key was linked to a
        customer); tombstones for the sessions, which reappear under the customer. The
        state is emptied."""
        delta = SessionDelta()
        for s in state.sessions:
            delta.tombstones.append(s.row(customer_key, deleted=True))
        payload = encode_sessions(state.sessions)
        state.sessions = []
        return payload, delta

    def absorb(self, customer_key: str, state: CustomerState, payload: list[Any], *,
               watermark: int, left_out: Collection[str] = ()) -> SessionDelta:
        """Merge released sessions into this customer's: intervals closer than the gap
        join. An event id this customer counts already, or one `left_out` names (the
        customer stage's choice: stream.stages.duplicates.handed_over), is taken out of
        the released session first, with its time: the copy that reached the customer
        first is the one its sessions keep (docs/semantics.md "Ordering and
        duplicates")."""
        theirs = decode_sessions(payload)
        watermark = max(watermark, state.watermark)
        before = {s.first_id: s.count for s in state.sessions}
        last_seen = {s.first_id: s for s in state.sessions}
        vanished: set[str] = set()
        delta = SessionDelta()
        seen = state.seen()
        seen.update(left_out)
        sessions = state.sessions = [s.copy() for s in state.sessions]
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
        self._finish(customer_key, state, before, last_seen, vanished, watermark, delta)
        return delta
