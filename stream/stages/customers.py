"""Batch logic of the customer stage (sessions + journeys per stitched customer), pure.

The Faust agent on `<prefix>.by-customer` hands a batch of envelopes (stream.stages.envelopes)
to `CustomerStage.prepare` and writes what comes back; the timer calls it with no
envelopes for partitions whose watermark moved. Per batch every touched customer's
state is read once and written once (one changelog record per customer per batch).

Order inside a batch, per partition: events are checked against the partition clock
in log order (late ones are only counted: the raw table already has them); handovers
from stitched anonymous keys are absorbed; each customer's events are applied with the
watermark after the batch; customers whose timers are due are advanced; then anonymous
keys that got linked release their state as handovers to the customer's partition.

A customer's table value is `wake (8 bytes) + orjson {"s": sessions, "j": journeys}`:
the wake time is readable without decoding, which is how the wake index is rebuilt
after recovery.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from journeys.definitions import Definitions
from stream.engine.dropoff import StepReached
from stream.engine.journeys import CustomerJourneys, InstanceRow, JourneyEngine, Retraction
from stream.engine.sessions import NO_WATERMARK, CustomerState, Sessionizer, SessionRow
from stream.eventtime.progress import PartitionProgress
from stream.stages.envelopes import EnvelopeBuilder, decode, partition_for

_WAKE = struct.Struct(">q")
NEVER = 2**62
CLOCK_PREFIX = b"\x00clock:"  # table keys of partition clock snapshots
FLOOR_RETENTION_MS = 24 * 3_600_000
"""How long (event time) a finished customer's lateness floor outlives its state.

A customer whose sessions and journeys are all final has nothing left but its floor
(the watermark it was last written with), and events of that customer older than the
floor are late. After a restart the partition clock starts again from re-delivered
events and may sit far behind where it was; re-delivered or re-forwarded copies of the
customer's applied events must not then open journeys again. So the floor is kept
until the partition watermark is this far past it, then the key is deleted."""

HOLD_MAX_WAIT_MS = 15 * 60_000
"""Wall time a customer waits for a stitched device's handover before settling without
it (a handover is produced within a batch or two of its hold; this only bounds the
damage of one that never comes, e.g. from a worker of an older version)."""

GetState = Callable[[bytes], bytes | None]


class Ev(NamedTuple):
    """A by-customer event; its tuple form is the engine's tail event."""

    occurred_at: int
    event_id: str
    type: str
    channel: str
    context: dict[str, Any] | None


def clock_key(partition: int) -> bytes:
    return CLOCK_PREFIX + str(partition).encode()


def pack(sessions: CustomerState, journeys: CustomerJourneys, wake: int | None) -> bytes:
    body = orjson.dumps({"s": sessions.to_obj(), "j": journeys.to_obj()})
    return _WAKE.pack(NEVER if wake is None else wake) + body


def unpack(data: bytes | None) -> tuple[CustomerState, CustomerJourneys]:
    if not data:
        return CustomerState(), CustomerJourneys()
    obj = orjson.loads(data[_WAKE.size:])
    return CustomerState.from_obj(obj["s"]), CustomerJourneys.from_obj(obj["j"])


def wake_of(data: bytes) -> int | None:
    wake = _WAKE.unpack_from(data)[0]
    return None if wake == NEVER else wake


@dataclass
class CustomerBatch:
    """Everything one batch (or timer tick) produces, written before states are stored."""

    session_rows: list[SessionRow] = field(default_factory=list)
    instance_rows: list[InstanceRow] = field(default_factory=list)
    retractions: list[Retraction] = field(default_factory=list)
    closed: list[InstanceRow] = field(default_factory=list)
    # partition -> (observations, watermark after the batch): the drop-off alert hook
    reached: dict[int, tuple[list[StepReached], int]] = field(default_factory=dict)
    handovers: EnvelopeBuilder = field(default_factory=EnvelopeBuilder)
    # table key -> (changelog partition, value or None to delete)
    states: dict[bytes, tuple[int, bytes | None]] = field(default_factory=dict)
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    late: int = 0
    undecodable: int = 0
    absorbed: int = 0
    released: int = 0
    advanced: int = 0
    held: int = 0
    holds_expired: int = 0

    def has_output(self) -> bool:
        return bool(self.session_rows or self.instance_rows or self.retractions)


class _Work:
    """A customer's state while a batch is prepared (loaded once, stored once).
    `expire`: when it was loaded as a bare floor, the time that floor expires."""

    __slots__ = ("expire", "journeys", "partition", "sessions")

    def __init__(self, partition: int, data: bytes | None) -> None:
        self.partition = partition
        self.sessions, self.journeys = unpack(data)
        idle = data is not None and self.journeys.is_idle() and self.sessions.is_empty()
        self.expire = wake_of(data) if idle and data is not None else None


class CustomerStage:
    """Holds the engines and the per-partition progress; nothing else survives a batch."""

    def __init__(self, definitions: Definitions, *, allowed_lateness_ms: int,
                 partitions: int, floor_retention_ms: int = FLOOR_RETENTION_MS) -> None:
        self.floor_retention_ms = floor_retention_ms
        self.sessionizer = Sessionizer(definitions.sessions.gap_ms)
        self.engine = JourneyEngine(definitions.journeys,
                                    definitions_version=definitions.version)
        self.allowed_lateness_ms = allowed_lateness_ms
        self.partitions = partitions
        self.progress: dict[int, PartitionProgress] = {}

    def progress_for(self, partition: int) -> PartitionProgress:
        prog = self.progress.get(partition)
        if prog is None:
            prog = self.progress[partition] = PartitionProgress(self.allowed_lateness_ms)
        return prog

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions revoked: their clocks and timers belong to the new owner now."""
        for p in partitions:
            self.progress.pop(p, None)

    def rebuild(self, partitions: set[int], items: Iterable[tuple[bytes, bytes]]) -> int:
        """Wake index and clock seeds of newly assigned partitions from the recovered
        table. Returns the number of customers scheduled."""
        n = 0
        for key, value in items:
            if not value:
                continue
            if key.startswith(CLOCK_PREFIX):
                p = int(key[len(CLOCK_PREFIX):])
                if p in partitions:
                    self.progress_for(p).load_seed(value)
                continue
            p = partition_for(key, self.partitions)
            if p in partitions:
                self.progress_for(p).schedule(key.decode(), wake_of(value))
                n += 1
        return n

    # ------------------------------------------------------------------ batches
    def prepare(self, records: Iterable[tuple[int, bytes | None]], get_state: GetState,
                wall_ms: int, *, tick: Sequence[int] = ()) -> CustomerBatch:
        """Apply a batch of envelopes (partition, value); `tick` names partitions to
        visit for due timers even without records. Nothing is stored here."""
        batch = CustomerBatch()
        work: dict[str, _Work] = {}

        def load(partition: int, key: str) -> _Work:
            w = work.get(key)
            if w is None:
                w = work[key] = _Work(partition, get_state(key.encode()))
                batch.holds_expired += w.journeys.expire_holds(wall_ms, HOLD_MAX_WAIT_MS)
            return w

        groups: dict[tuple[int, str], list[Ev]] = {}
        links: list[tuple[int, str, str, int]] = []
        caps: dict[str, int] = {}  # linked device key -> settle it only below the link
        handovers: list[tuple[int, list[Any]]] = []
        touched_parts: set[int] = set(tick)
        for partition, value in records:
            body = decode(value)
            if body is None:
                batch.undecodable += 1
                continue
            touched_parts.add(partition)
            prog = self.progress_for(partition)
            for cust, anon, at in body.get("p", ()):  # before the customer's events
                if load(partition, cust).journeys.wait_for(anon, at, wall_ms):
                    batch.held += 1
            for key, eid, typ, channel, t, ctx in body["e"]:
                batch.events += 1
                if prog.observe(t, wall_ms):
                    batch.late += 1
                else:
                    groups.setdefault((partition, key), []).append(Ev(t, eid, typ, channel, ctx))
            for link in body.get("m", ()):
                at = link[2] if len(link) > 2 else NEVER
                links.append((partition, link[0], link[1], at))
                caps[link[0]] = min(at, caps.get(link[0], at))
            handovers.extend((partition, h) for h in body.get("h", ()))

        def settle_at(partition: int, key: str, w: _Work) -> int:
            """The partition watermark, capped below a link this key is part of."""
            wm = self.progress_for(partition).watermark
            hold = w.journeys.hold()
            if hold is not None:
                wm = min(wm, hold)
            return min(wm, caps.get(key, wm))

        for (partition, key), events in groups.items():
            w = load(partition, key)
            wm = settle_at(partition, key, w)
            sd = self.sessionizer.apply(key, w.sessions, events, watermark=wm)
            jd = self.engine.apply_tail(key, w.journeys, [tuple(e) for e in events],
                                        watermark=wm)
            batch.session_rows.extend(sd.rows())
            self._take(batch, partition, jd)
            batch.applied += jd.applied
            batch.duplicates += jd.duplicates
            batch.late += jd.late

        # after the events: absorbing settles the customer to the watermark
        for partition, (source, into, jevents, spayload, *rest) in handovers:
            w = load(partition, into)
            w.journeys.waiting.pop(source, None)  # before settle_at: the hold ends here
            wm = settle_at(partition, into, w)
            sd = self.sessionizer.absorb(into, w.sessions, spayload, watermark=wm)
            jd = self.engine.absorb(into, w.journeys, source, [tuple(e) for e in jevents],
                                    watermark=wm, linked_at=rest[0] if rest else NO_WATERMARK,
                                    openings=rest[1] if len(rest) > 1 else ())
            batch.session_rows.extend(sd.rows())
            self._take(batch, partition, jd)
            batch.absorbed += 1

        for partition in sorted(touched_parts):
            prog = self.progress_for(partition)
            for key in [*prog.due(prog.watermark), *prog.overdue(wall_ms, HOLD_MAX_WAIT_MS)]:
                if key in work:
                    continue  # visited above with this watermark
                w = load(partition, key)
                wm = settle_at(partition, key, w)
                sd = self.sessionizer.apply(key, w.sessions, (), watermark=wm)
                batch.session_rows.extend(sd.rows())
                self._take(batch, partition, self.engine.advance(key, w.journeys, watermark=wm))
                batch.advanced += 1

        for partition, anon, cust, at in links:
            w = load(partition, anon)
            spayload, sd = self.sessionizer.release(anon, w.sessions)
            openings = self.engine.openings(w.journeys)
            jevents, jd = self.engine.release(anon, w.journeys)
            batch.session_rows.extend(sd.rows())
            self._take(batch, partition, jd)
            if at == NEVER and not (jevents or spayload[0] or spayload[1]):
                continue  # a link of an older format: nobody holds for it
            item = [anon, cust, jevents, spayload, NO_WATERMARK if at == NEVER else at,
                    openings]  # sent even when empty: the customer is holding for it
            batch.handovers.handover(partition_for(cust, self.partitions), item)
            batch.released += 1

        for key, w in work.items():
            s, j = w.sessions, w.journeys
            prog = self.progress_for(w.partition)
            if j.waiting:  # no timer: the handover (or the hold index) brings it back
                hold = j.hold()
                assert hold is not None
                prog.set_hold(key, (hold, min(since for _at, since in j.waiting.values())))
                prog.schedule(key, None)
                batch.states[key.encode()] = (w.partition, pack(s, j, hold))
                continue
            prog.set_hold(key, None)
            if j.is_idle() and s.is_empty():
                # Keep the floor for a while: a re-delivered or re-forwarded copy of an
                # applied event must still be late after a restart restarted the clock.
                expire = w.expire  # a visit moves the floor, not its expiry
                if expire is None:
                    expire = max(j.checkpoint, s.watermark) + self.floor_retention_ms
                if expire > prog.watermark:
                    prog.schedule(key, expire)
                    batch.states[key.encode()] = (w.partition, pack(s, j, expire))
                else:
                    prog.schedule(key, None)
                    batch.states[key.encode()] = (w.partition, None)
                continue
            wakes = [x for x in (self.engine.wake_at(j), self.sessionizer.wake_at(s))
                     if x is not None]
            wake = min(wakes) if wakes else None
            prog.schedule(key, wake)
            batch.states[key.encode()] = (w.partition, pack(s, j, wake))
        for partition in touched_parts:
            prog = self.progress_for(partition)
            snap = prog.snapshot(wall_ms)
            if snap is not None:
                batch.states[clock_key(partition)] = (partition, snap)
            obs = batch.reached.get(partition, ([], 0))[0]
            batch.reached[partition] = (obs, prog.alert_watermark)
        return batch

    @staticmethod
    def _take(batch: CustomerBatch, partition: int, delta: Any) -> None:
        batch.instance_rows.extend(delta.upserts)
        batch.retractions.extend(delta.retractions)
        batch.closed.extend(delta.closed)
        if delta.reached:
            batch.reached.setdefault(partition, ([], 0))[0].extend(delta.reached)
