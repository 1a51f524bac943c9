"""Batch logic of the customer stage (sessions + journeys per stitched customer), pure.

The Faust agent on `<prefix>.by-customer` hands a batch of envelopes (stream.stages.
envelopes) to `CustomerStage.prepare` and writes what comes back; the timer calls it
with no envelopes to give up overdue holds. Per batch every touched customer's state is
read once and written once (one changelog record per customer per batch).

Event time (stream.eventtime.watermarks): each by-customer partition's watermark is its
`Frontier` over the identity stage's claims, which arrive in the same envelopes as the
events. A batch applies all its events, then settles every touched customer at the
watermark after the batch, then visits the customers whose timers are due at it.
Events come at or after the watermark (their sources promised so); an event older than
what its own customer was already settled to cannot be applied and is *late* (only
possible when an idle source resumes with old events). A re-delivered event is
recognised by its input position (stream.stages.customer_state) and skipped.

Order inside a batch: holds, events, links and claims per record in log order; then
each customer's events are applied with the watermark after the batch; handovers from
stitched anonymous keys are absorbed; customers whose timers are due are advanced; then
linked devices whose event time has reached the link settle up to it and release what
is not final then as a handover to the customer's partition (docs/stream.md "Identity
stitching"). A linked device settles nothing at or after its link time before that.

Handovers travel on a topic of their own (`<prefix>.handovers`, co-partitioned, read by
a second agent into the same `prepare` with `lane=HANDOVER_RECORDS`). Appended to the
by-customer partition, a handover waited behind whatever events were queued there: in a
backlog its customer stayed held, and with it the partition's alert watermark, until the
whole backlog was read (measured with 200k events: the alert state outgrew a Kafka
message).

Provisional rows (docs/stream.md "Exactly once in effect"): rows of sessions and journey
instances that are still open can vanish again (an earlier event that arrives later
opens the session or journey instead, and the state remembers what it showed, to
retract it). So they are written only after the states are stored
(`CustomerBatch.provisional`); final rows and retractions are written before. Written
before, a crash between the write and the store left a shown instance the re-processed
state never knew, so nothing retracted it (found by the thorough property profile).
And versions jump by SEQ_EPOCH when a value is first loaded in a new generation (after
a restart or rebalance), and at least to the generation's `version_floor`, so rows
written again after a crash always supersede those of the attempt that crashed, even
when its state is gone (a replay into a new broker). `CustomerJourneys.seq` versions a
key's session rows too (docs/stream.md "Exactly once in effect").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from journeys.definitions import Definitions
from journeys.versions import SEQ_EPOCH, version_floor
from stream.engine.journeys import JourneyEngine
from stream.engine.runs import PATH_CAP
from stream.engine.session_state import session_id
from stream.engine.sessions import Sessionizer
from stream.eventtime.timers import Timers
from stream.eventtime.watermarks import NO_WATERMARK, Claim
from stream.stages.customer_batch import CustomerBatch
from stream.stages.customer_cache import DEFAULT_CUSTOMERS, StateCache
from stream.stages.customer_handover import HandoverSteps, take_out_of_tail
from stream.stages.customer_input import BatchInput, Load, Record, read_records
from stream.stages.customer_progress import PartitionProgress, everything_committed
from stream.stages.customer_state import (
    RECORD_BOUND,
    RECORDS,
    Committed,
    CustomerValue,
    CustomerWork,
    read_value,
    value_records,
    wake_of,
)
from stream.stages.duplicates import first_copies
from stream.stages.envelopes import MAX_HANDOVER_BYTES, EnvelopeBuilder, partition_for
from stream.stages.parts import is_part

FLOOR_RETENTION_MS = 24 * 3_600_000
"""How long (event time) a finished customer's floor outlives its state.

A customer whose sessions and journeys are all final has nothing left but its floor
and input positions; they are kept until the partition watermark is this far past the
floor, then the key is deleted, so that a re-delivered copy of an applied event (which
comes within seconds of the original) is still recognised. Event time can run far
ahead of that in a backlog (days of events in seconds), so the value also stays until
every record that brought it something is committed (CustomerValue.replayable):
measured with three workers on one partition, a by-customer record processed, not yet
committed, then read again after a rebalance, once the keys it touched were deleted,
re-linked the devices and handed their events over a second time."""

DUE_PER_BATCH = 2048
"""Customers whose timers are due visited per partition and batch, at most.

A watermark that jumps (the end of a backlog, an idle source's claim) can make every
open session or journey of a partition due at once; visited in one batch, all their
values were decoded, advanced and encoded together: measured with 100,000 open
journeys on the RocksDB store, the batch held ~300 MiB at the worker's peak (memray),
and RSS after a backlog grew with its size (docs/reliability.md "Bounded state"). The
rest stay due: the next batch or the timer tick (every 0.5 s, at once while some are
left) visits them at the watermark of then, which settles them the same way (settling
depends on the watermark, not on when it is applied); the alert claim stays below
them meanwhile (PartitionProgress.unvisited)."""

HOLD_MAX_WAIT_MS = 15 * 60_000
"""Wall time a customer waits for a stitched device's handover before settling without
it (a handover is produced within a batch or two of its hold; this only bounds the
damage of one that never comes, e.g. from a worker of an older version)."""

GetState = Callable[[bytes], bytes | None]


def _weight(w: CustomerWork) -> int:
    return w.size


class CustomerStage(HandoverSteps):
    """Holds the engines and the per-partition progress; nothing else survives a batch."""

    def __init__(self, definitions: Definitions, *, partitions: int, topic: str = "",
                 floor_retention_ms: int = FLOOR_RETENTION_MS,
                 committed: Committed = everything_committed, path_cap: int = PATH_CAP,
                 record_bound: int = RECORD_BOUND,
                 cache_customers: int = DEFAULT_CUSTOMERS,
                 timers: Callable[[int], Timers] | None = None,
                 due_per_batch: int = DUE_PER_BATCH,
                 handover_bytes: int = MAX_HANDOVER_BYTES) -> None:
        self.timers = timers  # partition -> its timer index; None: in memory
        self.due_per_batch = due_per_batch  # timer visits per partition and batch
        self.handover_bytes = handover_bytes  # per handovers record (larger: pieces)
        self.floor_retention_ms = floor_retention_ms
        self.record_bound = record_bound  # bytes of a value per table record
        self.committed = committed  # what a finished customer's deletion waits for
        self.batches = 0  # prepare() calls so far
        self.sessionizer = Sessionizer(definitions.sessions.gap_ms)
        self.engine = JourneyEngine(definitions.journeys, path_cap=path_cap,
                                    definitions_version=definitions.version)
        self.partitions = partitions
        self.topic = topic  # for late-event records
        self.progress: dict[int, PartitionProgress] = {}
        self.generation = time.time_ns()  # a new one at every rebuild (restart, rebalance)
        # customers' decoded values between batches (stream.stages.customer_cache)
        self.cache: StateCache[CustomerWork] = StateCache(cache_customers, weigh=_weight)

    def progress_for(self, partition: int) -> PartitionProgress:
        prog = self.progress.get(partition)
        if prog is None:
            wakes = None if self.timers is None else self.timers(partition)
            prog = self.progress[partition] = PartitionProgress(wakes)
        return prog

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions revoked: their frontiers, timers and cached values belong to the
        new owner now."""
        gone = set(partitions)
        for p in gone:
            prog = self.progress.pop(p, None)
            if prog is not None:
                prog.wakes.close()
        self.cache.discard(k for k, w in self.cache.items() if w.partition in gone)

    def rebuild(self, partitions: set[int], items: Iterable[tuple[bytes, bytes]]) -> int:
        """Timer index of newly assigned partitions from the recovered table. Returns
        the number of customers scheduled."""
        self.generation = max(self.generation + 1, time.time_ns())
        n = 0
        for key, value in items:
            if not value or key.startswith(b"\x00") or is_part(key):
                continue  # empty, a part record, or of an older format (clock snapshots)
            p = partition_for(key, self.partitions)
            if p in partitions:
                self.progress_for(p).wakes.schedule(key.decode(), wake_of(value))
                n += 1
        return n

    # ------------------------------------------------------------------ batches
    def prepare(self, records: Iterable[Record], get_state: GetState, wall_ms: int, *,
                tick: Sequence[int] = (), lane: int = RECORDS) -> CustomerBatch:
        """Apply a batch of envelopes of one topic (`lane`: RECORDS for by-customer,
        HANDOVER_RECORDS for handovers); `tick` names partitions to visit for overdue
        holds even without records. Nothing is stored here; the values it computed are
        kept decoded for the next batch (`cache`) only when it returns."""
        batch = CustomerBatch(handovers=EnvelopeBuilder(self.handover_bytes))
        self.batches += 1
        work: dict[str, CustomerWork] = {}
        cache = self.cache

        def load(partition: int, key: str) -> CustomerWork:
            w = work.get(key)
            if w is None:
                w = cache.take(key)
                if w is None:
                    w = CustomerWork(partition, *read_value(get_state, key.encode()))
                work[key] = w
                if w.value.gen != self.generation:  # first load since a restart/rebalance
                    self._reemit(batch, key, w.value)
                batch.holds_expired += w.value.journeys.expire_holds(wall_ms,
                                                                     HOLD_MAX_WAIT_MS)
            return w

        inp = read_records(records, load, batch, wall_ms, lane, topic=self.topic,
                           progress_for=self.progress_for)
        inp.partitions.update(tick)
        self._apply_events(batch, inp, load)
        for partition, item in inp.handovers:  # absorbed at their link time (below)
            load(partition, item[1]).value.pending.setdefault(item[0], item)
        self._visit_due(batch, inp, load, wall_ms)
        for key, w in list(work.items()):  # handovers whose link time has come
            if w.value.pending:
                self._absorb_ready(batch, key, w)
        for key, w in list(work.items()):  # linked devices whose time has come
            linked = w.value.linked
            if linked is not None and self.progress_for(w.partition).watermark >= linked[1]:
                self._settle(batch, w.partition, key, w.value, linked[1])
                self._release(batch, w.partition, w.value, key, *linked)
        self._finish(batch, inp, work)
        return batch

    def _settle_at(self, partition: int, w: CustomerWork) -> int:
        """The partition watermark, capped at a link this key is part of (a customer
        holding for a handover, a device waiting to hand over)."""
        wm = self.progress_for(partition).watermark
        hold = w.value.journeys.hold()
        if hold is not None:
            wm = min(wm, hold)
        if w.value.linked is not None:
            wm = min(wm, w.value.linked[1])
        return wm

    def _apply_events(self, batch: CustomerBatch, inp: BatchInput, load: Load) -> None:
        """Each customer's new events of the batch, first copies only, applied to its
        sessions and journeys at its settle point."""
        for (partition, key), events in inp.groups.items():
            w = load(partition, key)
            wm = self._settle_at(partition, w)
            v = w.value
            screened = first_copies(key, v.journeys.tail, v.sessions.seen(), events,
                                    inp.offsets[(partition, key)])
            batch.duplicates += screened.duplicates
            batch.conflicts.extend(screened.conflicts)
            # applied copies a new copy outranks leave the tail (each batch replays it
            # from the checkpoint: an instance that vanishes is retracted) and their
            # open sessions (stream.stages.duplicates, docs/semantics.md)
            taken_out = take_out_of_tail(v.journeys, screened.replaced)
            sd = self.sessionizer.apply(key, v.sessions, screened.kept, watermark=wm,
                                        versions=v.journeys, taken_out=taken_out)
            tail = [tuple(e) if e[5] is not None else e[:5]  # (no trailing null stored)
                    for e in screened.kept]
            jd = self.engine.apply_tail(key, v.journeys, tail, watermark=wm)
            batch.session_rows.extend(sd.rows())
            self._take(batch, partition, jd)
            batch.applied += jd.applied
            batch.duplicates += jd.duplicates

    def _visit_due(self, batch: CustomerBatch, inp: BatchInput, load: Load,
                   wall_ms: int) -> None:
        """Advance the customers of the batch's partitions that are due: timers at the
        watermark, overdue holds, finished values that may be deleted."""
        for partition in sorted(inp.partitions):
            prog = self.progress_for(partition)
            due = prog.wakes.due(prog.watermark, self.due_per_batch)
            # a bounded visit: the rest stay due for the next batch or tick, and the
            # alert claim stays below them (PartitionProgress.unvisited)
            prog.unvisited = (prog.wakes.next_wake() if len(due) == self.due_per_batch
                              else None)
            if prog.unvisited is not None and prog.unvisited > prog.watermark:
                prog.unvisited = None
            for key in [*due, *prog.overdue(wall_ms, HOLD_MAX_WAIT_MS),
                        *prog.deletable(partition, self.committed)]:
                if (partition, key) in inp.groups:
                    continue  # visited above with this watermark (merely loaded is not:
                    # a link or a hold loads a key without settling it)
                w = load(partition, key)
                wm = self._settle_at(partition, w)
                sd = self.sessionizer.apply(key, w.value.sessions, (), watermark=wm,
                                            versions=w.value.journeys)
                batch.session_rows.extend(sd.rows())
                self._take(batch, partition,
                           self.engine.advance(key, w.value.journeys, watermark=wm))
                batch.advanced += 1

    def _finish(self, batch: CustomerBatch, inp: BatchInput,
                work: dict[str, CustomerWork]) -> None:
        """Every touched value stored (and kept decoded in the cache), what is open
        named, and each partition's alert claim."""
        for key, w in work.items():
            self._store(batch, key, w)
            batch.open_sessions.update(session_id(key, s.first_id)
                                       for s in w.value.sessions.sessions)
            batch.open_instances.update(w.value.journeys.emitted)
        self.cache.keep((key, None if w.gone else w) for key, w in work.items())
        for partition in inp.partitions:
            prog = self.progress_for(partition)
            obs = batch.reached.get(partition, ([], Claim(partition, NO_WATERMARK)))[0]
            batch.reached[partition] = (obs, Claim(partition, prog.alert_watermark,
                                                   prog.frontier.idle and prog.settled))

    def _store(self, batch: CustomerBatch, key: str, w: CustomerWork) -> None:
        """The customer's new table value and its timer."""
        v, j = w.value, w.value.journeys
        prog = self.progress_for(w.partition)
        prog.deferred.pop(key, None)
        if j.waiting:  # a handover brings it back, or its link time (pending handovers)
            hold = j.hold()
            assert hold is not None
            # the alert stage may not pass a step this customer has not observed yet:
            # its unsettled events (the tail) are observed when a visit settles them,
            # up to the link time; so it is due for those like any customer
            first = j.tail[0][0] if j.tail else hold
            prog.set_hold(key, (min(hold, first),
                                min(since for _at, since in j.waiting.values())))
            wake = min((item[4] for item in v.pending.values()), default=None)
            settle = self.engine.wake_at(j)
            if settle is not None and settle <= hold:
                wake = settle if wake is None else min(wake, settle)
            prog.wakes.schedule(key, wake)
            self._put(batch, key, w, v.pack(hold if wake is None else wake))
            return
        prog.set_hold(key, None)
        if v.is_idle():
            # Keep the floor and positions for a while: a re-delivered copy of an
            # applied event must still be recognised.
            expire = w.expire  # a visit moves the floor, not its expiry
            if expire is None:
                expire = max(v.floor, NO_WATERMARK) + self.floor_retention_ms
            if expire > prog.watermark:
                prog.wakes.schedule(key, expire)
                self._put(batch, key, w, v.pack(expire))
            elif v.replayable(w.partition, self.committed):
                prog.wakes.schedule(key, None)  # deletable() brings it back
                prog.defer(key, v.positions, self.batches)
                self._put(batch, key, w, v.pack(expire))
            else:
                prog.wakes.schedule(key, None)
                self._put(batch, key, w, None)
            return
        wakes = [x for x in (self.engine.wake_at(j), self.sessionizer.wake_at(v.sessions),
                             v.linked[1] if v.linked is not None else None) if x is not None]
        wake = min(wakes) if wakes else None
        prog.wakes.schedule(key, wake)
        self._put(batch, key, w, v.pack(wake))

    def _put(self, batch: CustomerBatch, key: str, w: CustomerWork,
             data: bytes | None) -> None:
        """A value's table records: one, or parts when over `record_bound` bytes."""
        out, w.parts = value_records(key.encode(), w.partition, data, w.parts,
                                     self.record_bound)
        w.gone = data is None
        w.stored(data)
        batch.states.update(out)

    def _reemit(self, batch: CustomerBatch, key: str, v: CustomerValue) -> None:
        """A value loaded for the first time in this generation: versions jump past
        whatever an attempt that crashed may have written, and the open sessions and
        instances are written again (their last write may have been lost between the
        store and the provisional write: module docstring)."""
        v.gen = self.generation
        v.journeys.seq = max(v.journeys.seq + SEQ_EPOCH, version_floor(self.generation))
        batch.session_rows.extend(self.sessionizer.reemit(key, v.sessions,
                                                          versions=v.journeys))
        batch.instance_rows.extend(self.engine.reemit(key, v.journeys))
