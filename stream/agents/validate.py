"""The validate stage: raw touchpoints -> raw table + by-identity envelopes | dead letters.

This stage keeps no durable state, so it does not need Faust's tables or its
per-message machinery (~300 us per message): a plain aiokafka consumer in its own
consumer group (`validate_group`) reads batches with `getmany`. Valid events are
released in event-time order across the raw partitions (stream.eventtime.align), and offsets are
committed only below what is still held and after the released batch is durable:
forwards and dead letters acknowledged by the broker, raw touchpoints and dead letters
written to the warehouse. A crash or a rebalance re-delivers what is uncommitted;
every sink is idempotent on event_id, so that is harmless.

Events whose ids are all placeholders (stream.engine.identity.is_junk_id) have no customer:
they are kept in the raw table and counted, and not forwarded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from mode import Service

from journeys.timeutil import now_ms
from stream.agents.transport import stage_consumer
from stream.eventtime.align import Aligner

if TYPE_CHECKING:
    from stream.agents.runtime import StreamRuntime

log = logging.getLogger(__name__)

MAX_RECORDS = 10_000  # per getmany
POLL_TIMEOUT_MS = 200
FETCH_BYTES = 1024 * 1024  # per partition and fetch
MAX_HELD = 100_000  # events held for alignment before partitions read ahead are paused


def validate_group(app_id: str) -> str:
    """Consumer group of the validate stage (Faust's own group is the app id)."""
    return f"{app_id}-validate"


class RawValidator(Service):
    """Runs the validate stage on its own aiokafka consumer inside the worker."""

    def __init__(self, runtime: StreamRuntime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self.consumer: AIOKafkaConsumer | None = None
        self.aligner = Aligner(slack_ms=0)
        self._next: dict[Any, int] = {}  # TopicPartition -> next offset to read
        self._committed: dict[Any, int] = {}
        self._paused: set[Any] = set()

    @property
    def label(self) -> str:
        return "RawValidator"

    async def on_start(self) -> None:
        settings = self.runtime.settings
        kafka = settings.kafka
        self.aligner = Aligner(slack_ms=settings.allowed_lateness_ms // 2)
        self.consumer = stage_consumer(
            kafka.bootstrap_servers, validate_group(settings.app_id),
            f"{settings.app_id}-validate", max_partition_fetch_bytes=FETCH_BYTES)
        await self.consumer.start()
        self.consumer.subscribe([kafka.raw_topic], listener=_Revoked(self))
        self.add_future(self._run())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None

    async def _behind(self) -> set[int]:
        """Assigned raw partitions with records not read yet (or not known)."""
        consumer = self.consumer
        assert consumer is not None
        behind = set()
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            if hw is None or await consumer.position(tp) < hw:
                behind.add(tp.partition)
        return behind

    async def _run(self) -> None:
        consumer, aligner, stage = self.consumer, self.aligner, self.runtime.validate
        assert consumer is not None
        try:
            while not self.should_stop:
                fetched = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS,
                                                 max_records=MAX_RECORDS)
                records = [(m.topic, m.partition, m.offset, m.key, m.value)
                           for msgs in fetched.values() for m in msgs]
                valid, batch = stage.parse(records, now_ms())
                for partition, offset, tp in valid:
                    aligner.add(partition, offset, tp.occurred_at, tp)
                for tp, msgs in fetched.items():
                    if msgs:
                        self._next[tp] = msgs[-1].offset + 1
                if not aligner and not batch.dead and not records:
                    continue
                behind = await self._behind()
                stage.route(aligner.release(behind), batch)
                await self.runtime.handle_raw(batch, received=len(records))
                await self._commit()
                self._flow(behind)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("validate stage failed; stopping the worker uncommitted")
            await self.runtime.app.crash(exc)

    async def _commit(self) -> None:
        """Commit each partition below its first held record (a crash re-reads those)."""
        consumer, aligner = self.consumer, self.aligner
        assert consumer is not None
        offsets = {}
        for tp, nxt in self._next.items():
            held = aligner.first_held(tp.partition)
            offsets[tp] = nxt if held is None else held
        offsets = {tp: o for tp, o in offsets.items() if self._committed.get(tp) != o}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
            self._committed.update(offsets)
        except KafkaError as exc:  # rebalance: re-delivered elsewhere, idempotent
            log.warning("validate: commit failed (%r); the batch will be re-read", exc)

    def _flow(self, behind: set[int]) -> None:
        """Bound what is held: pause partitions read far ahead while it is large."""
        consumer, aligner = self.consumer, self.aligner
        assert consumer is not None
        want = aligner.ahead(behind) if len(aligner) > MAX_HELD else set()
        for tp in consumer.assignment():
            if tp.partition in want and tp not in self._paused:
                consumer.pause(tp)
                self._paused.add(tp)
            elif tp.partition not in want and tp in self._paused:
                consumer.resume(tp)
                self._paused.discard(tp)

    def revoked(self, tps: Iterable[Any]) -> None:
        tps = list(tps)
        self.aligner.forget(tp.partition for tp in tps)
        for tp in tps:
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
            self._paused.discard(tp)


class _Revoked(ConsumerRebalanceListener):
    """Held events of revoked partitions are dropped: the new owner re-reads them."""

    def __init__(self, validator: RawValidator) -> None:
        self.validator = validator

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.validator.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None
