"""What the Faust agents, timers and the validate service of one worker share.

Three stages, each batch made durable before its offsets are committed:

    raw ──validate──► by-identity ──identity──► by-customer ──customers──► ClickHouse
        (aiokafka)                  (alias table)               (state table,   journeys-closed
         raw table, dead letters                                 timer)         reached hooks

Every handler returns only after its outputs are acknowledged (produced messages by
the broker, warehouse inserts, changelog records), so an acked batch is durable and an
unacked one is re-delivered; all sinks are idempotent (event_id, session id + version,
journey instance id + version, alert id). The customer stage and its timer share one
lock: a timer tick never interleaves with a batch touching the same states.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import faust
import orjson
from faust.types import TP, EventT

from journeys.definitions import load_definitions
from journeys.events import EventValidator
from journeys.settings import WorkerSettings
from journeys.timeutil import now_ms
from stream.agents.sink import WarehouseSink
from stream.agents.stats import StreamStats
from stream.engine.dropoff import StepReached
from stream.engine.journeys import InstanceRow
from stream.stages.customers import HOLD_MAX_WAIT_MS, CustomerBatch, CustomerStage
from stream.stages.identity import IdentityStage
from stream.stages.validate import ValidateBatch, ValidateStage
from warehouse.backend import Warehouse

if TYPE_CHECKING:
    from stream.agents.app import JourneysApp

log = logging.getLogger(__name__)

FLUSH_RETRY_DEADLINE_S = 300.0  # then the worker crashes (batch left uncommitted)
IDLE_AFTER_MS = 1_000  # no input for this long: event time follows the wall clock
STRANDED_TICKS = 6  # ~3 s of a partition looking stranded before it is re-read

ReachedHook = Callable[[Mapping[int, tuple[Sequence[StepReached], int]]], Awaitable[None]]
"""{by-customer partition: (observations, partition watermark after them)}: awaited once
per customer-stage batch and timer tick, before the batch's states are stored; a tick
reports every caught-up partition (idle ones too), so watermarks reach alerting."""


def closed_message(row: InstanceRow) -> tuple[bytes, bytes]:
    """(key, value) on the journeys-closed topic: keyed by instance id (consumers
    deduplicate on it), the final row as JSON."""
    return row.instance_id.encode(), orjson.dumps(row.as_record())


class StreamRuntime:
    """Per-app state: settings, stats, the three stages, the sink, tables, hooks."""

    def __init__(self, app: JourneysApp, settings: WorkerSettings,
                 warehouse: Warehouse | None) -> None:
        self.app = app
        self.settings = settings
        self.stats = StreamStats()
        definitions = load_definitions(settings.definitions_path)
        parts = settings.kafka.partitions
        self.validate = ValidateStage(EventValidator(settings.channels),
                                      {d.steps[0] for d in definitions.journeys}, parts)
        self.identity = IdentityStage(parts)
        self.customers = CustomerStage(definitions, partitions=parts,
                                       allowed_lateness_ms=settings.allowed_lateness_ms)
        self.sink = WarehouseSink(settings.warehouse, warehouse)
        self.aliases: Any = None  # Faust tables, set by create_app
        self.states: Any = None
        self.alerts: Any = None  # stream.agents.alerts.AlertWorker, set by create_app
        self.lock = asyncio.Lock()
        self.reached_hooks: list[ReachedHook] = []
        self.idle_after_ms = IDLE_AFTER_MS
        self._next_offset: dict[int, int] = {}  # by-customer partition -> next to process
        self._indexed: set[int] = set()  # by-customer partitions with a wake index
        self._stranded: dict[TP, int] = {}  # source partition -> consecutive ticks stranded

    def add_reached_hook(self, hook: ReachedHook) -> None:
        """Attach a consumer of StepReached observations (drop-off alerting)."""
        self.reached_hooks.append(hook)

    # ------------------------------------------------------------ validate stage
    async def handle_raw(self, batch: ValidateBatch, *, received: int) -> None:
        """Forward a released validate batch; returns once it is durable."""
        kafka, producer, st = self.settings.kafka, self.app.producer, self.stats
        pending: list[Awaitable[Any]] = []
        for partition, value in batch.envelopes.messages():
            pending.append(await producer.send(kafka.by_identity_topic, None, value,
                                               partition, None, None))
        for key, payload in batch.dead_messages:
            pending.append(await producer.send(kafka.dead_letter_topic, key, payload,
                                               None, None, None))
        if pending:
            await asyncio.gather(*pending)
        tps, dead = batch.touchpoints, batch.dead
        if self.sink.enabled and (tps or dead):
            await self.write_with_retry(lambda: self.sink.write_raw(tps, dead))
        st.events_in += received
        st.events_valid += len(tps)
        st.rejected.update(batch.rejected)
        st.touchpoints_written += len(tps)
        st.dead_letters_written += len(dead)
        st.unattributed += batch.unattributed
        st.events_sessionized += batch.unattributed  # done: they only go to the raw table

    # ------------------------------------------------------------ identity stage
    async def handle_identity(self, events: Sequence[EventT]) -> None:
        data = self.aliases.data

        def get_alias(anon: str) -> str | None:
            value = data.get(anon.encode())
            return value.decode() if value else None

        batch = self.identity.prepare(((e.message.partition, e.message.value)
                                       for e in events), get_alias)
        if batch.undecodable:
            log.warning("identity: skipped %d undecodable envelopes", batch.undecodable)
        topic, producer = self.settings.kafka.by_customer_topic, self.app.producer
        pending = [await producer.send(topic, None, value, partition, None, None)
                   for partition, value in batch.envelopes.messages()]
        if pending:
            await asyncio.gather(*pending)
        merges = batch.merges
        if merges and self.sink.enabled:
            await self.write_with_retry(lambda: self.sink.write_merges(merges))
        await self.store(self.aliases, {anon.encode(): (p, cust.encode())
                                        for anon, (cust, p) in batch.aliases.items()})
        self.stats.events_identity += batch.events
        self.stats.identity_merges += len(merges)
        self.stats.events_stitched += batch.stitched

    # ------------------------------------------------------------ customer stage
    def _get_state(self, key: bytes) -> bytes | None:
        value: bytes | None = self.states.data.get(key)
        return value

    async def handle_customers(self, events: Sequence[EventT]) -> None:
        async with self.lock:
            batch = self.customers.prepare(((e.message.partition, e.message.value)
                                            for e in events), self._get_state, now_ms())
            for e in events:
                msg = e.message
                if msg.offset >= self._next_offset.get(msg.partition, 0):
                    self._next_offset[msg.partition] = msg.offset + 1
            if batch.undecodable:
                log.warning("customers: skipped %d undecodable envelopes", batch.undecodable)
            await self.emit(batch)

    async def tick(self) -> None:
        """Timer: advance idle partitions by the wall clock and visit due customers."""
        if not self._indexed or self.app.rebalancing or getattr(self.app, "in_recovery", False):
            return
        await self._redeliver_stranded()
        async with self.lock:
            wall, due = now_ms(), []
            idle: dict[int, tuple[Sequence[StepReached], int]] = {}
            for p in sorted(self._indexed):
                if not self._caught_up(p):
                    continue
                prog = self.customers.progress_for(p)
                if prog.idle_advance(wall, self.idle_after_ms):
                    self.stats.idle_advances += 1
                nxt = prog.next_wake()
                if (nxt is not None and nxt <= prog.watermark) or prog.overdue(
                        wall, HOLD_MAX_WAIT_MS):
                    due.append(p)
                else:
                    idle[p] = ((), prog.alert_watermark)
            if due:
                await self.emit(self.customers.prepare((), self._get_state, wall, tick=due))
            for hook in self.reached_hooks if idle else ():
                await hook(idle)

    async def _redeliver_stranded(self) -> None:
        """Re-seek source partitions whose fetched records were never delivered
        (stream.agents.transport.Consumer.stranded_offset) for STRANDED_TICKS ticks in a row."""
        consumer = self.app.consumer
        check = getattr(consumer, "stranded_offset", None)
        if check is None:
            return
        kafka = self.settings.kafka
        for p in sorted(self._indexed):
            for topic in (kafka.by_identity_topic, kafka.by_customer_topic):
                tp = TP(topic, p)
                offset = check(tp)
                if offset is None:
                    self._stranded.pop(tp, None)
                    continue
                self._stranded[tp] = n = self._stranded.get(tp, 0) + 1
                if n >= STRANDED_TICKS:
                    log.warning("%s: records after offset %d were fetched but never delivered;"
                                " seeking back to re-read them", tp, offset)
                    self._stranded.pop(tp, None)
                    await consumer.seek(tp, offset)

    def _caught_up(self, partition: int) -> bool:
        """Every record of the partition up to its high-water mark has been applied, so
        no re-delivered event is still pending and the clock may follow the wall clock."""
        tp = TP(self.settings.kafka.by_customer_topic, partition)
        consumer = self.app.consumer
        try:
            hw = consumer.highwater(tp)
        except Exception:  # not assigned (anymore) / consumer not ready
            return False
        if hw is None or hw < 0:
            return False
        committed = consumer._committed_offset.get(tp) or 0
        return max(self._next_offset.get(partition, 0), committed) >= hw

    async def on_states_recovered(self) -> None:
        """After each recovery: forget revoked partitions, index newly assigned ones."""
        topic = self.settings.kafka.by_customer_topic
        active = {tp.partition for tp in self.app.assignor.assigned_actives()
                  if tp.topic == topic}
        revoked, new = self._indexed - active, active - self._indexed
        async with self.lock:
            self.customers.forget(revoked)
            for p in revoked:
                self._next_offset.pop(p, None)
            if new:
                started = time.perf_counter()
                n = self.customers.rebuild(new, list(self.states.data.items()))
                log.info("customers: indexed %d customers of partitions %s in %.2fs",
                         n, sorted(new), time.perf_counter() - started)
            self._indexed = active

    async def emit(self, batch: CustomerBatch) -> None:
        """Write a customer-stage batch; returns once all of it is durable."""
        st = self.stats
        if self.sink.enabled and batch.has_output():
            sessions, rows, retr = batch.session_rows, batch.instance_rows, batch.retractions
            await self.write_with_retry(lambda: self.sink.write_customers(sessions, rows, retr))
        kafka, producer = self.settings.kafka, self.app.producer
        # Observations first: what a device observed is on the step-reached topic before
        # its handover exists, so the customer's retraction of it always comes after.
        for hook in self.reached_hooks if batch.reached else ():
            await hook(batch.reached)
        pending = []
        for row in batch.closed:
            key, value = closed_message(row)
            pending.append(await producer.send(kafka.closed_journeys_topic, key, value,
                                               None, None, None))
        for partition, value in batch.handovers.messages():
            pending.append(await producer.send(kafka.by_customer_topic, None, value,
                                               partition, None, None))
        if pending:
            await asyncio.gather(*pending)
        await self.store(self.states, batch.states)
        st.events_sessionized += batch.events
        st.events_applied += batch.applied
        st.duplicates += batch.duplicates
        st.late_events += batch.late
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
        marks = [wm for _obs, wm in batch.reached.values()]
        if marks:
            st.last_watermark_ms = max(st.last_watermark_ms, *marks)

    # ------------------------------------------------------------------ shared
    async def store(self, table: Any, states: Mapping[bytes, tuple[int, bytes | None]]) -> None:
        """Put values in a table and wait until their changelog records (written to the
        given partition; None = a tombstone) are acknowledged. Faust's own commit-time
        flush gives up after 0.1 s without progress, so a commit could otherwise cover
        state that never reached the changelog (measured: a SIGKILL then restored stale
        sessions). Table recovery reads the changelog topic whoever wrote it."""
        data = table.data
        topic = table.changelog_topic.get_topic_name()
        send = self.app.producer.send  # aiokafka directly: Faust's send_soon path costs
        pending = []                   # ~300 us per record (measured), this ~70 us
        for key, (partition, value) in states.items():
            if value is None:
                if data.pop(key, None) is None:
                    continue  # never stored here: nothing to delete
            else:
                data[key] = value
            pending.append(await send(topic, key, value, partition, None, None))
        if pending:
            await asyncio.gather(*pending)

    async def write_with_retry(self, write: Callable[[], object]) -> None:
        """Run a blocking write in a thread; retry with backoff, then give up (raise)."""
        delay, deadline = 0.2, time.monotonic() + FLUSH_RETRY_DEADLINE_S
        while True:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(write)
            except Exception as exc:
                self.stats.flush_failures += 1
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("warehouse write failed (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self.stats.record_flush(time.perf_counter() - started)
            return

    async def run_batches(self, stream: faust.StreamT, max_messages: int,
                          handle: Callable[[Sequence[EventT]], Awaitable[None]]) -> None:
        """An agent loop: batches in, commit only what was handled completely."""
        async for events in stream.take_events(max_messages,
                                               within=self.settings.flush_interval_s):
            try:
                await handle(events)
            except BaseException as exc:
                # take_events acks the batch in its `finally`; one extra reference
                # per message makes that ack a no-op, so the offsets stay uncommitted.
                for event in events:
                    event.message.incref()
                if not isinstance(exc, asyncio.CancelledError):
                    log.exception("batch failed; stopping the worker uncommitted")
                    await self.app.crash(exc)
                raise
