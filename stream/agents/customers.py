"""The customer stage's Kafka side: by-customer envelopes -> ClickHouse, journeys-closed,
step-reached observations, handovers, and the `customer-state` table.

Two Faust agents (by-customer, and the handovers stitched devices send to their
customers) hand each batch to the pure `stream.stages.customers.CustomerStage`; a
timer (every TICK_INTERVAL_S) gives up holds whose handover is overdue and re-reads
partitions whose fetched records were stranded by a rebalance. Both share one lock: a
tick never interleaves with a batch touching the same states. Per batch: warehouse
rows, then the step-reached observations (reached hooks: drop-off alerting), then
journeys-closed and handovers, then the table values, then the rows still provisional;
then the batch is committed. A batch prepared in several chunks writes a chunk's
provisional rows with the next chunk's first insert (stream.stages.customer_batch.
ProvisionalCarry): one insert per table per chunk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from faust.types import TP

from journeys.timeutil import ms_to_iso, now_ms
from stream.agents.context import (
    Record,
    StageContext,
    byte_chunks,
    isolating,
    send_all,
    store_parted,
    write_with_retry,
)
from stream.agents.table_store import table_store
from stream.engine.outputs import InstanceRow, StepReached
from stream.engine.session_state import SessionRow
from stream.eventtime.watermarks import Claim
from stream.stages.customer_batch import CustomerBatch, ProvisionalCarry
from stream.stages.customer_state import HANDOVER_RECORDS, PEER_RECORDS, RECORDS
from stream.stages.customers import HOLD_MAX_WAIT_MS, CustomerStage
from stream.stages.duplicates import Conflict

log = logging.getLogger(__name__)

STRANDED_TICKS = 6  # ~3 s of a partition looking stranded before it is re-read
UPSTREAM_REFRESH_S = 2.0  # how often the identity stage's commits are looked up
LATE_LOG_INTERVAL_S = 10.0

ReachedHook = Callable[[Mapping[int, tuple[Sequence[StepReached], Claim]]], Awaitable[None]]
"""{by-customer partition: (observations, the partition's claim for the alert stage)}:
awaited once per batch before the batch's states are stored."""


def closed_message(row: InstanceRow) -> tuple[bytes, bytes]:
    """(key, value) on the journeys-closed topic: keyed by instance id (consumers
    deduplicate on it), the final row as JSON."""
    return row.instance_id.encode(), orjson.dumps(row.as_record())


TICK_BATCHES = 16
"""Batches one timer tick prepares at most for customers a bounded visit left due
(stream.stages.customers.DUE_PER_BATCH), one after the other."""


class CustomerAgent:
    def __init__(self, ctx: StageContext, stage: CustomerStage,
                 consumer: Callable[[], Any]) -> None:
        self.ctx = ctx
        self.stage = stage
        self._consumer = consumer  # Faust's consumer, when it exists
        self.table: Any = None  # the Faust table, set by create_app
        self.lock = asyncio.Lock()
        self.reached_hooks: list[ReachedHook] = []
        self._indexed: set[int] = set()  # partitions with a timer index
        self._stranded: dict[TP, int] = {}  # source partition -> ticks seen stranded
        self._late_logged = 0.0
        self._late_pending = 0
        # by-identity partition -> the identity stage's committed offset (group-wide)
        self._upstream: dict[int, int] = {}
        self._peers: dict[int, int] = {}  # by-customer partition -> committed (group)
        self._upstream_at = 0.0

    def add_reached_hook(self, hook: ReachedHook) -> None:
        """Attach a consumer of StepReached observations (drop-off alerting)."""
        self.reached_hooks.append(hook)

    def committed_offset(self, lane: int, partition: int) -> int | None:
        """The stage's `Committed` (stream.stages.customer_state): this worker's commits
        of its by-customer and handovers partitions; the identity stage's commits of
        by-identity partitions, and of by-customer partitions for the devices'
        releases (PEER_RECORDS), group-wide, as last looked up (a few seconds old at
        most, which only delays deletions). Read from the stage's thread: plain dict
        reads."""
        if lane >= 0:
            return self._upstream.get(partition)
        if lane == PEER_RECORDS:  # a device's release, on any worker's partition
            return self._peers.get(partition)
        kafka = self.ctx.settings.kafka
        topic = kafka.by_customer_topic if lane == RECORDS else kafka.handovers_topic
        consumer = self._consumer()
        offset = consumer._committed_offset.get(TP(topic, partition)) if consumer else None
        return None if offset is None else int(offset)

    async def _refresh_upstream(self) -> None:
        """Look up the group's committed by-identity offsets (every partition, whoever
        owns it) for `committed_offset`."""
        if time.monotonic() - self._upstream_at < UPSTREAM_REFRESH_S:
            return
        self._upstream_at = time.monotonic()
        kafka = self.ctx.settings.kafka
        tps = [TP(topic, p) for topic in (kafka.by_identity_topic, kafka.by_customer_topic)
               for p in range(kafka.partitions)]
        try:
            offsets = await self._consumer().group_committed(*tps)
        except Exception as exc:  # no group yet, a rebalance: next time
            log.debug("customers: committed by-identity offsets not read: %r", exc)
            return
        self._upstream = {tp.partition: offset for tp, offset in offsets.items()
                          if tp.topic == kafka.by_identity_topic}
        self._peers = {tp.partition: offset for tp, offset in offsets.items()
                       if tp.topic == kafka.by_customer_topic}

    def _get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.table.data.get(key)
        return value

    async def handle(self, events: list[Any]) -> None:
        """A batch of by-customer envelopes."""
        await self._handle(events, RECORDS)

    async def handle_handovers(self, events: list[Any]) -> None:
        """A batch of the handovers topic (stream.stages.customers)."""
        await self._handle(events, HANDOVER_RECORDS)

    async def _handle(self, events: list[Any], lane: int) -> None:
        records = [(e.message.partition, e.message.offset, e.message.value) for e in events]
        kafka = self.ctx.settings.kafka
        topic = kafka.by_customer_topic if lane == RECORDS else kafka.handovers_topic

        async def prepare(chunk: list[Record]) -> CustomerBatch:
            # CPU-bound pure work off the event loop: heartbeats and fetches go on
            return await asyncio.to_thread(self.stage.prepare, chunk, self._get, now_ms(),
                                           lane=lane)

        carry = ProvisionalCarry()  # a chunk's provisional rows, for the next chunk

        async def emit(batch: CustomerBatch) -> None:
            await self.emit(batch, carry)

        for chunk in byte_chunks(records):
            async with self.lock:
                await isolating(self.ctx, "customers", topic, chunk, prepare, emit)
        await self._write_provisional(*carry.take())  # the last chunk's: before the commit

    async def tick(self, in_rebalance: bool) -> None:
        """Timer: give up overdue holds, delete finished customers whose inputs are
        committed now, visit customers a bounded visit left due (a batch each, up to
        TICK_BATCHES per tick, until none is left), re-read stranded partitions."""
        if not self._indexed or in_rebalance:
            return
        await self._redeliver_stranded()
        await self._refresh_upstream()
        for _ in range(TICK_BATCHES):  # bounded: a customer due again at once (a
            # held one) cannot keep one tick going; the next tick goes on
            if self.lock.locked():
                return
            # A batch being prepared visits its partitions' due customers itself.
            # Waiting for the lock made the timer overrun its interval (it was a Faust
            # timer then: "Timer journeys.tick is overlapping").
            async with self.lock:
                wall = now_ms()
                due = [p for p in sorted(self._indexed) if self._due(p, wall)]
                if not due:
                    return
                await self.emit(await asyncio.to_thread(self.stage.prepare, (), self._get,
                                                        wall, tick=due))

    def _due(self, partition: int, wall: int) -> bool:
        """Whether a tick has customers of `partition` to visit."""
        prog = self.stage.progress_for(partition)
        return (prog.unvisited is not None or bool(prog.overdue(wall, HOLD_MAX_WAIT_MS))
                or prog.has_deletable(partition, self.committed_offset))

    async def emit(self, batch: CustomerBatch, carry: ProvisionalCarry | None = None) -> None:
        """Write a batch; returns once all of it is durable, but for its provisional
        rows when `carry` is given: they are left there, to go with the next chunk's
        first insert or after the last chunk (`_handle`), always after this store."""
        ctx, _st, kafka = self.ctx, self.ctx.stats, self.ctx.settings.kafka
        if batch.undecodable:
            log.warning("customers: skipped %d undecodable envelopes", batch.undecodable)
        sessions, rows = batch.final()  # what is still open is written after the store
        if carry:  # an earlier chunk's provisional rows: its states are stored
            carried_sessions, carried_rows = carry.take()
            sessions, rows = carried_sessions + sessions, carried_rows + rows
        retr, late = batch.retractions, batch.late
        if ctx.sink.enabled and (sessions or rows or retr or late):
            await write_with_retry(ctx, lambda: ctx.sink.write_customers(sessions, rows, retr,
                                                                         late),
                                   len(sessions) + len(rows) + len(retr) + len(late))
        # Observations first: what a device observed is on the step-reached topic before
        # its handover exists, so the customer's retraction of it always comes after.
        for hook in self.reached_hooks if batch.reached else ():
            await hook(batch.reached)
        if batch.conflicts:
            await self._dead_letter_conflicts(batch.conflicts)
        await send_all(ctx, kafka.closed_journeys_topic,
                       ((None, *closed_message(row)) for row in batch.closed))
        await send_all(ctx, kafka.handovers_topic,
                       ((p, None, v) for p, v in batch.handovers.messages()))
        await store_parted(ctx, self.table, batch.states)  # parts, heads, tombstones
        open_sessions, open_rows = batch.provisional()
        if carry is not None:
            carry.add(open_sessions, open_rows)
        else:
            await self._write_provisional(open_sessions, open_rows)
        self._count(batch)

    async def _write_provisional(self, sessions: list[SessionRow],
                                 rows: list[InstanceRow]) -> None:
        """Rows of what is still open, once the states that show them are stored."""
        ctx = self.ctx
        if ctx.sink.enabled and (sessions or rows):
            await write_with_retry(ctx, lambda: ctx.sink.write_customers(sessions, rows, [], []),
                                   len(sessions) + len(rows))

    async def _dead_letter_conflicts(self, conflicts: list[Conflict]) -> None:
        """Copies of an event id with other content than the first (stream.stages.
        duplicates): dead letters (the archiver writes the table), a WARNING, a count."""
        ctx, topic = self.ctx, self.ctx.settings.kafka.by_customer_topic
        received = ms_to_iso(now_ms())
        await send_all(ctx, ctx.settings.kafka.dead_letter_topic, (
            (None, None, orjson.dumps({
                "reason": c.reason(), "stage": "customers", "event_id": c.copy[1],
                "received_at": received, "original": c.original().decode(),
                "error": c.where(topic)}))
            for c in conflicts))
        ctx.stats.rejected["conflicting_duplicate"] += len(conflicts)
        log.warning("customers: %d copies of events differed from the copy kept (the one "
                    "of smaller rank) and were left out (dead-lettered as conflicting_duplicate; "
                    "docs/semantics.md \"Ordering and duplicates\"), e.g. %s",
                    len(conflicts), conflicts[0].reason())

    def _count(self, batch: CustomerBatch) -> None:
        st = self.ctx.stats
        st.events_sessionized += batch.events
        st.events_applied += batch.applied
        st.duplicates += batch.duplicates
        st.redelivered += batch.redelivered
        st.late_events += len(batch.late)
        st.session_rows_written += len(batch.session_rows)
        st.journey_rows_written += len(batch.instance_rows)
        st.journey_retractions += len(batch.retractions)
        st.journeys_closed += len(batch.closed)
        st.handovers_sent += batch.released
        st.handovers_absorbed += batch.absorbed
        st.timer_visits += batch.advanced
        st.holds += batch.held
        if batch.holds_expired:
            st.holds_expired += batch.holds_expired
            log.warning("customers: gave up waiting for %d stitched handovers after %d min "
                        "(their journeys may split in two)", batch.holds_expired,
                        HOLD_MAX_WAIT_MS // 60_000)
        for p, (_obs, claim) in batch.reached.items():
            st.customer_watermarks[p] = claim.mark
        if batch.late:
            self._warn_late(batch)

    def _warn_late(self, batch: CustomerBatch) -> None:
        self._late_pending += len(batch.late)
        now = time.monotonic()
        if now - self._late_logged < LATE_LOG_INTERVAL_S:
            return
        self._late_logged = now
        first = batch.late[0]
        log.warning("customers: %d events arrived behind what their customer was already "
                    "settled to and were left out of journeys (e.g. %s at %s, settled to "
                    "%s): a source partition resumed after being idle with older events "
                    "(docs/semantics.md)", self._late_pending, first.event_id,
                    ms_to_iso(first.occurred_at_ms), ms_to_iso(first.watermark_ms))
        self._late_pending = 0

    async def _redeliver_stranded(self) -> None:
        """Re-seek source partitions whose fetched records were never delivered
        (stream.agents.transport.Consumer.stranded_offset) for STRANDED_TICKS ticks."""
        consumer = self._consumer()
        check = getattr(consumer, "stranded_offset", None)
        if check is None:
            return
        kafka = self.ctx.settings.kafka
        for p in sorted(self._indexed):
            for topic in (kafka.by_identity_topic, kafka.by_customer_topic,
                          kafka.handovers_topic):
                tp = TP(topic, p)
                offset = await check(tp)
                if offset is None:
                    self._stranded.pop(tp, None)
                    continue
                self._stranded[tp] = n = self._stranded.get(tp, 0) + 1
                if n >= STRANDED_TICKS:
                    log.warning("%s: records after offset %d were fetched but never delivered;"
                                " seeking back to re-read them", tp, offset)
                    self._stranded.pop(tp, None)
                    await consumer.seek(tp, offset)

    async def on_recovered(self, active: set[int]) -> None:
        """After each recovery: forget revoked partitions, index newly assigned ones."""
        revoked, new = self._indexed - active, active - self._indexed
        async with self.lock:
            self.stage.forget(revoked | new)  # frontiers restart from fresh claims
            # decoded values are reloaded from the recovered table: a partition that
            # moved away and back meanwhile holds what its other owner wrote
            self.stage.cache.clear()
            if new:
                started = time.perf_counter()
                n = self.stage.rebuild(new, table_store(self.table).items())
                log.info("customers: indexed %d customers of partitions %s in %.2fs",
                         n, sorted(new), time.perf_counter() - started)
            self._indexed = active
