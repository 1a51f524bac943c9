"""A customer's open sessions, the value the sessionizer (stream.engine.sessions) works
on: their rows for the `sessions` table, their ids, and their bytes.

Why a module of its own: the stored form (state format 2: per event its id, time and
channel, times relative to the session's start) is read by the customer stage's value
(stream.stages.customer_state), the recompute path and the sink's row type apart from
how events are applied, as stream.engine.journey_state is for journeys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import orjson

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


class VersionCounter(Protocol):
    """Where a customer's session row versions come from: a counter that only grows,
    bumped once per row. The stream shares the customer's journey counter
    (`CustomerJourneys.seq`, which jumps on reload: journeys/versions.py), so a session
    id's rows outbid each other in write order whatever their content: a session that
    loses an event, is split, or comes back after a deletion is expressible
    (docs/semantics.md "Ordering and duplicates")."""

    seq: int


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

    def row(self, customer_key: str, version: int, *, deleted: bool = False) -> SessionRow:
        """Its row at `version` (from the customer's `VersionCounter`); `deleted`: the
        id no longer exists (merged away, handed over), until a higher version says so."""
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
            version=version,
            deleted=1 if deleted else 0,
        )

    def copy(self) -> OpenSession:
        return OpenSession(self.start, self.first_id, self.end, self.count, dict(self.channels),
                           list(self.ids), None if self.times is None else list(self.times),
                           None if self.cix is None else bytearray(self.cix))

    def snapshot(self) -> OpenSession:
        """A copy for its row only (a deletion later): without the ids, which a long
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

    def timed_ids(self, seen: set[str]) -> set[str]:
        """Ids of the open sessions whose events' times are known (format 2): what a
        session can take out with its bounds recomputed (`OpenSession.without`).
        `seen` (this state's `seen()`) is the answer when every session is format 2,
        the usual case: no second set of every id."""
        if all(s.times is not None for s in self.sessions):
            return seen
        return {eid for s in self.sessions if s.times is not None for eid in s.ids}

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


def session_events(payload: list[Any]) -> list[tuple[int, str, str]]:
    """(time, id, channel) of every event of encoded sessions (a handover payload)
    whose times are known (format 2): what the customer stage ranks a handed-over
    copy by when the device's journeys do not carry it (stream.stages.duplicates)."""
    out: list[tuple[int, str, str]] = []
    for s in decode_sessions(payload):
        if s.times is None or s.cix is None:
            continue
        names = list(s.channels)
        out.extend((t, eid, names[c - CH0])
                   for t, eid, c in zip(s.times, s.ids, s.cix, strict=True))
    return out
