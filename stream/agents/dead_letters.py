"""Dead letters made outside the worker -> the warehouse's `dead_letters` table.

The collector, `journeys ingest` and `journeys generate` refuse bad input before it
reaches the raw topic and produce it to `<prefix>.dead-letter` (ingest.producer). They
have no warehouse connection (the collector must keep answering while ClickHouse is
down), so without this stage their rejections were on the topic and in the importer's
rejects file but not queryable with the worker's own (`stage = validate`).

The archiver is a plain aiokafka consumer in its own group (`dead_letter_group`), like
the validate stage: per `getmany` it writes one insert of every letter whose stage is
not the worker's own (those the worker writes to the table itself, with the raw
message's coordinates), then commits. Rows carry the dead-letter record's topic,
partition and offset; at assignment the archiver reads the highest offset already in the
table per partition and skips up to it, so a crash between insert and commit does not
write a letter twice (the table is a plain MergeTree).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from mode import Service

from journeys.events import Rejection
from journeys.stages import dead_letter_group
from journeys.timeutil import datetime_to_ms, now_ms
from stream.agents.context import StageContext, write_with_retry
from stream.agents.transport import stage_consumer
from stream.stages.validate import DeadLetter

log = logging.getLogger(__name__)

WORKER_STAGES = frozenset({"validate", "alert_webhook"})  # written by the worker itself
MAX_RECORDS = 5_000
POLL_TIMEOUT_MS = 500


def parse_letter(value: bytes | None, topic: str, partition: int, offset: int,
                 timestamp_ms: int | None) -> DeadLetter | None:
    """A dead-letter record as a table row; None for the worker's own stages. A record
    that is not a dead letter at all is archived as one (stage `unknown`)."""
    try:
        body = orjson.loads(value or b"")
        if not isinstance(body, dict):
            raise ValueError("not an object")
        stage = str(body.get("stage") or "unknown")
        if stage in WORKER_STAGES:
            return None
        received = body.get("received_at")
        received_ms = (datetime_to_ms(datetime.fromisoformat(received.replace("Z", "+00:00")))
                       if isinstance(received, str) else timestamp_ms or now_ms())
        original = body.get("original")
        raw = original.encode() if isinstance(original, str) else b""
        event_id = body.get("event_id")
        rejection = Rejection(str(body.get("reason") or "unknown"), raw,
                              event_id if isinstance(event_id, str) else None)
    except (ValueError, TypeError, AttributeError, orjson.JSONDecodeError):
        stage, received_ms = "unknown", timestamp_ms or now_ms()
        rejection = Rejection("undecodable dead letter", value or b"")
    return DeadLetter(rejection, stage, received_ms, topic, partition, offset)


class DeadLetterArchiver(Service):
    """Runs inside the worker next to the validate stage (stream.agents.app)."""

    def __init__(self, ctx: StageContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ctx = ctx
        self.consumer: AIOKafkaConsumer | None = None
        self.written: dict[int, int] = {}  # partition -> highest offset in the table
        self.archived = 0

    @property
    def label(self) -> str:
        return "DeadLetterArchiver"

    async def on_start(self) -> None:
        settings = self.ctx.settings
        kafka = settings.kafka
        self.consumer = stage_consumer(
            kafka.bootstrap_servers, dead_letter_group(settings.app_id),
            f"{settings.app_id}-dead-letters", fetch_max_wait_ms=100)  # rarely busy
        await self.consumer.start()
        self.consumer.subscribe([kafka.dead_letter_topic], listener=_Assigned(self))
        self.add_future(self._run())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None

    async def load_written(self, partitions: Iterable[int]) -> None:
        from warehouse.writers import dead_letter_offsets

        if not self.ctx.sink.enabled or not self.ctx.sink.is_open:
            return  # the worker is stopping (measured: an assignment during shutdown)
        topic = self.ctx.settings.kafka.dead_letter_topic
        found = await asyncio.to_thread(dead_letter_offsets, self.ctx.sink.warehouse,
                                        topic)
        for p in partitions:
            self.written[p] = found.get(p, -1)

    def letters(self, records: Sequence[Any]) -> list[DeadLetter]:
        out = []
        for m in records:
            if m.offset <= self.written.get(m.partition, -1):
                continue  # archived before a crash that came before the commit
            letter = parse_letter(m.value, m.topic, m.partition, m.offset, m.timestamp)
            if letter is not None:
                out.append(letter)
        return out

    async def _run(self) -> None:
        from warehouse.writers import write_dead_letters

        consumer = self.consumer
        assert consumer is not None
        try:
            while not self.should_stop:
                fetched = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS,
                                                 max_records=MAX_RECORDS)
                records = [m for msgs in fetched.values() for m in msgs]
                if not records:
                    continue
                letters = self.letters(records)
                if letters and self.ctx.sink.enabled:
                    await write_with_retry(
                        self.ctx, partial(write_dead_letters, self.ctx.sink.warehouse, letters),
                        len(letters))
                    self.archived += len(letters)
                for m in records:
                    self.written[m.partition] = max(self.written.get(m.partition, -1),
                                                    m.offset)
                try:
                    await consumer.commit({tp: msgs[-1].offset + 1
                                           for tp, msgs in fetched.items() if msgs})
                except KafkaError as exc:  # rebalance: the new owner skips what is written
                    log.warning("dead letters: commit failed (%r)", exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("dead-letter archiver failed; stopping the worker uncommitted")
            await self.ctx.crash(exc)


class _Assigned(ConsumerRebalanceListener):
    def __init__(self, archiver: DeadLetterArchiver) -> None:
        self.archiver = archiver

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self.archiver.written.pop(tp.partition, None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.archiver.load_written(tp.partition for tp in assigned)
