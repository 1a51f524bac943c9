"""The validate stage's Kafka side: raw topic -> raw table + by-identity envelopes.

This stage keeps no table, so it does not need Faust's tables or its per-message
machinery (~300 us per message): a plain aiokafka consumer in its own consumer group
(`validate_group`) reads batches with `getmany` and hands them to the pure
`stream.stages.validate.ValidateStage`, the source of event time. Per poll: forward
(acknowledged by the broker), write raw touchpoints, late events and dead letters to
the warehouse, then commit the offsets with each partition's source clock as commit
metadata, so a new reader of the partition (after a rebalance or a restart) judges
lateness exactly as the old one would have. A crash re-delivers what is uncommitted:
the identity stage skips what it already read (by raw partition and offset), every
warehouse sink is idempotent.

Brokers that drop commit metadata (Tansu) make a new reader start its clock from the
records it reads; it can then let through an event the old reader would have called
late, which the customer stage judges against its customer (docs/stream.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from journeys.events import Rejection
from journeys.stages import validate_group
from journeys.timeutil import ms_to_iso, now_ms
from stream.agents.context import StageContext, send_all, write_with_retry
from stream.agents.transport import stage_consumer
from stream.stages.validate import RawRecord, ValidateBatch, ValidateStage, late_summary

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 200
FETCH_BYTES = 1024 * 1024  # per partition and fetch
LATE_LOG_INTERVAL_S = 10.0
STAGE = "validate"


def _journal(records: list[RawRecord]) -> list[tuple[int, int, bytes | None]]:
    return [(r[1], r[2], r[4]) for r in records]


class RawValidator(Service):
    """Runs the validate stage on its own aiokafka consumer inside the worker."""

    def __init__(self, ctx: StageContext, stage: ValidateStage, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ctx = ctx
        self.stage = stage
        self.consumer: AIOKafkaConsumer | None = None
        self._next: dict[TopicPartition, int] = {}  # next offset to read (to commit)
        self._done: dict[TopicPartition, int] = {}  # next offset, kept (consumer lag)
        self._late_logged = 0.0
        self.topic = ctx.settings.kafka.raw_topic
        self._late_pending: dict[int, tuple[int, int, int]] = {}
        self._values_logged = 0.0
        self._values_pending: dict[str, int] = {}
        self._lock = asyncio.Lock()  # the stage runs in a thread; rebalances wait for it

    @property
    def label(self) -> str:
        return "RawValidator"

    async def on_start(self) -> None:
        settings = self.ctx.settings
        self.consumer = stage_consumer(
            settings.kafka.bootstrap_servers, validate_group(settings.app_id),
            f"{settings.app_id}-validate", max_partition_fetch_bytes=FETCH_BYTES)
        await self.consumer.start()
        self.consumer.subscribe([settings.kafka.raw_topic], listener=_Rebalance(self))
        self.add_future(self._run())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None

    async def assigned(self, tps: Iterable[TopicPartition]) -> None:
        """Restore each new partition's source clock from its commit metadata."""
        consumer = self.consumer
        assert consumer is not None
        tps = list(tps)
        try:
            committed = await consumer._coordinator.fetch_committed_offsets(tps)
        except Exception as exc:  # the clock then starts from what is read
            log.warning("validate: no committed source clocks (%r)", exc)
            committed = {}
        count = len(consumer.partitions_for_topic(self.ctx.settings.kafka.raw_topic) or ())
        async with self._lock:
            for tp in tps:
                meta = getattr(committed.get(tp), "metadata", "") or ""
                try:
                    state = orjson.loads(meta) if meta else None
                except orjson.JSONDecodeError:
                    state = None
                self.stage.assign(tp.partition, state, count, now_ms())

    def _flow(self, ahead: set[int]) -> None:
        """Pause the partitions read too far ahead (ValidateStage.ahead), resume the rest."""
        consumer = self.consumer
        assert consumer is not None
        for tp in consumer.assignment():
            if tp.partition in ahead:
                consumer.pause(tp)
            elif tp in consumer.paused():
                consumer.resume(tp)

    async def revoked(self, tps: Iterable[TopicPartition]) -> None:
        async with self._lock:
            for tp in tps:
                self.stage.revoke(tp.partition)
                self._next.pop(tp, None)
                self._done.pop(tp, None)

    def lag(self) -> dict[tuple[str, int], int]:
        """Raw records not yet validated, per assigned partition: the high-water of the
        last fetch minus the next offset to read (partitions not read yet left out)."""
        consumer = self.consumer
        if consumer is None:
            return {}
        out = {}
        for tp, nxt in list(self._done.items()):
            hw = consumer.highwater(tp)
            if hw is not None:
                out[(tp.topic, tp.partition)] = max(0, hw - nxt)
        return out

    async def _caught_up(self) -> set[int]:
        """Assigned raw partitions with nothing left to read (as far as known)."""
        consumer = self.consumer
        assert consumer is not None
        out = set()
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            if hw is not None and await consumer.position(tp) >= hw:
                out.add(tp.partition)
        return out

    async def _run(self) -> None:
        consumer, stage = self.consumer, self.stage
        assert consumer is not None
        try:
            while not self.should_stop:
                fetched = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS,
                                                 max_records=self.ctx.settings.flush_max_events)
                records = [(m.topic, m.partition, m.offset, m.key, m.value)
                           for msgs in fetched.values() for m in msgs]
                wall = now_ms()
                caught_up = await self._caught_up()
                if not records and not stage.claims_due(wall, caught_up):
                    continue
                records, quarantined = await self._screen(records)
                async with self._lock:  # the pure stage off the event loop
                    with self.ctx.journal.computing(STAGE, self.topic, _journal(records)):
                        batch = await asyncio.to_thread(stage.prepare, records, wall,
                                                        caught_up)
                self._quarantine(batch, quarantined, wall)
                for tp, msgs in fetched.items():
                    if msgs:
                        self._next[tp] = msgs[-1].offset + 1
                await self.handle(batch, received=len(records))
                self._done.update(self._next)
                await self._commit()
                self._flow(stage.ahead(await self._caught_up()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("validate stage failed; stopping the worker uncommitted")
            await self.ctx.crash(exc)

    async def _screen(self, records: list[RawRecord]
                      ) -> tuple[list[RawRecord], list[tuple[RawRecord, int]]]:
        """Records the worker died on (stream.agents.crash_journal): parse each alone
        under its own marker; one that killed it twice so is left out (quarantined)."""
        journal = self.ctx.journal
        verdicts = journal.verdicts(STAGE, self.topic, [(r[1], r[2]) for r in records])
        if all(v is None for v in verdicts):
            return records, []
        kept: list[RawRecord] = []
        quarantined: list[tuple[RawRecord, int]] = []
        for record, deaths in zip(records, verdicts, strict=True):
            _t, partition, offset, _k, value = record
            if journal.quarantined(deaths):
                quarantined.append((record, deaths or 0))
            else:
                if deaths is not None:
                    with journal.computing(STAGE, self.topic, [(partition, offset, value)],
                                           alone_deaths=deaths):
                        await asyncio.to_thread(self.stage.validator.parse, value or b"")
                kept.append(record)
            journal.cleared(STAGE, self.topic, [(partition, offset)])
        return kept, quarantined

    def _quarantine(self, batch: ValidateBatch, quarantined: list[tuple[RawRecord, int]],
                    wall_ms: int) -> None:
        """Dead-letter quarantined records with the batch (the validate stage writes its
        own dead letters to the table)."""
        for (topic, partition, offset, key, value), deaths in quarantined:
            where = f"{topic}[{partition}]@{offset}"
            log.error("validate: record %s killed the worker %d times while handled alone: "
                      "quarantined (dead-lettered and skipped)", where, deaths)
            self.ctx.stats.quarantined_records += 1
            ValidateStage.reject(batch, Rejection(
                f"quarantined: killed the worker {deaths} times at {where}", value or b""),
                topic, partition, offset, key, wall_ms)

    async def handle(self, batch: ValidateBatch, *, received: int) -> None:
        """Forward a batch; returns once it is durable."""
        ctx, kafka, st = self.ctx, self.ctx.settings.kafka, self.ctx.stats
        await send_all(ctx, kafka.by_identity_topic,
                       ((p, None, v) for p, v in batch.envelopes.messages()))
        await send_all(ctx, kafka.dead_letter_topic,
                       ((None, k, v) for k, v in batch.dead_messages))
        tps, dead, late = batch.touchpoints, batch.dead, batch.late
        if ctx.sink.enabled and (tps or dead or late):
            await write_with_retry(ctx, lambda: ctx.sink.write_raw(tps, dead, late),
                                   len(tps) + len(dead) + len(late))
        st.events_in += received
        st.events_valid += len(tps)
        st.rejected.update(batch.rejected)
        st.values_ignored.update(batch.values_ignored)
        st.touchpoints_written += len(tps)
        st.dead_letters_written += len(dead)
        st.unattributed += batch.unattributed
        st.events_forwarded += batch.forwarded
        st.late_events += len(late)
        st.events_sessionized += batch.unattributed + len(late)  # done: raw table only
        for c in batch.claims:
            st.source_watermarks[c.partition] = c.mark
        if late:
            self._warn_late(batch)
        if batch.values_ignored:
            self._warn_values(batch)

    def _warn_values(self, batch: ValidateBatch) -> None:
        """Unusable properties.value are left out of journey value (the events count):
        say so at the default level, at most every LATE_LOG_INTERVAL_S."""
        for reason, n in batch.values_ignored.items():
            self._values_pending[reason] = self._values_pending.get(reason, 0) + n
        now = time.monotonic()
        if now - self._values_logged < LATE_LOG_INTERVAL_S:
            return
        self._values_logged = now
        log.warning("properties.value left out of journey value (the events are kept; "
                    "a value must be a finite JSON number within +-1e15: docs/semantics.md "
                    "\"Journey value\"): %s", ", ".join(
                        f"{n} {r}" for r, n in sorted(self._values_pending.items())))
        self._values_pending.clear()

    def _warn_late(self, batch: ValidateBatch) -> None:
        """Late events are left out of journeys: say so at the default level, at most
        every LATE_LOG_INTERVAL_S, with the count and where they came from."""
        for p, (n, oldest, mark) in late_summary(batch.late).items():
            m, old, w = self._late_pending.get(p, (0, oldest, mark))
            self._late_pending[p] = (m + n, min(old, oldest), max(w, mark))
        now = time.monotonic()
        if now - self._late_logged < LATE_LOG_INTERVAL_S:
            return
        self._late_logged = now
        topic = self.ctx.settings.kafka.raw_topic
        for p, (n, oldest, mark) in sorted(self._late_pending.items()):
            log.warning("%d late events from %s[%d] left out of journeys (oldest %s, "
                        "partition watermark %s; kept in the raw table and late_events; "
                        "lateness is %d ms: see docs/semantics.md)", n, topic, p,
                        ms_to_iso(oldest), ms_to_iso(mark),
                        self.ctx.settings.allowed_lateness_ms)
        self._late_pending.clear()

    async def _commit(self) -> None:
        """Commit what was read, with each partition's source clock as metadata."""
        consumer = self.consumer
        assert consumer is not None
        states = self.stage.states()
        offsets = {tp: (nxt, orjson.dumps(states.get(tp.partition)).decode())
                   for tp, nxt in self._next.items()}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:  # rebalance: re-delivered elsewhere, skipped there
            log.warning("validate: commit failed (%r); the batch will be re-read", exc)
        self._next.clear()


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, validator: RawValidator) -> None:
        self.validator = validator

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.validator.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.validator.assigned(assigned)
