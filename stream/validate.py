"""The validate stage: raw touchpoints -> raw table + by-identity envelopes | dead letters.

This stage keeps no state, so it does not need Faust's tables or its per-message
machinery (~300 us per message): a plain aiokafka consumer in its own consumer group
(`validate_group`) reads batches with `getmany`, and offsets are committed only after
the batch is durable: forwards and dead letters acknowledged by the broker, raw
touchpoints and dead letters written to the warehouse. A crash or a rebalance re-delivers
an uncommitted batch; every sink is idempotent on event_id, so that is harmless.

Events whose ids are all placeholders (stream.identity.is_junk_id) have no customer:
they are kept in the raw table and counted, and not forwarded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from mode import Service

from journeys.events import EventValidator, Rejection, Touchpoint
from stream.envelopes import EnvelopeBuilder, partition_for
from stream.identity import is_junk_id
from stream.sink import DeadLetter
from stream.stats import reason_code

if TYPE_CHECKING:
    from stream.runtime import StreamRuntime

log = logging.getLogger(__name__)

MAX_RECORDS = 10_000  # per getmany
POLL_TIMEOUT_MS = 200


def validate_group(app_id: str) -> str:
    """Consumer group of the validate stage (Faust's own group is the app id)."""
    return f"{app_id}-validate"


@dataclass
class ValidateBatch:
    touchpoints: list[Touchpoint] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    dead_messages: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    envelopes: EnvelopeBuilder = field(default_factory=EnvelopeBuilder)
    unattributed: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class ValidateStage:
    """Pure: one batch of raw records in, everything to write out."""

    def __init__(self, validator: EventValidator, entry_types: Iterable[str],
                 partitions: int) -> None:
        self.validator = validator
        self.entry_types = frozenset(entry_types)
        self.partitions = partitions

    def prepare(self, records: Iterable[tuple[str, int, int, bytes | None, bytes | None]],
                received_ms: int) -> ValidateBatch:
        """records: (topic, partition, offset, key, value) in log order."""
        batch = ValidateBatch()
        entries = self.entry_types
        for topic, partition, offset, key, value in records:
            result = self.validator.parse(value or b"")
            if isinstance(result, Touchpoint):
                batch.touchpoints.append(result)
                cust, anon = result.customer_id, result.anonymous_id
                route = anon if not is_junk_id(anon) else cust
                if is_junk_id(route):
                    batch.unattributed += 1
                    continue
                ctx = (result.context or None) if result.type in entries else None
                batch.envelopes.event(
                    partition_for(route, self.partitions),  # type: ignore[arg-type]
                    [result.event_id, result.type, result.channel, result.occurred_at,
                     cust, anon, ctx])
                continue
            rejection: Rejection = result
            code = reason_code(rejection.reason)
            batch.rejected[code] = batch.rejected.get(code, 0) + 1
            batch.dead_messages.append(
                (key, rejection.to_dead_letter(stage="validate", received_at_ms=received_ms)))
            batch.dead.append(DeadLetter(rejection, "validate", received_ms, topic,
                                         partition, offset))
        return batch


class RawValidator(Service):
    """Runs the validate stage on its own aiokafka consumer inside the worker."""

    def __init__(self, runtime: StreamRuntime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self.consumer: AIOKafkaConsumer | None = None

    @property
    def label(self) -> str:
        return "RawValidator"

    async def on_start(self) -> None:
        settings = self.runtime.settings
        kafka = settings.kafka
        self.consumer = AIOKafkaConsumer(
            kafka.raw_topic,
            bootstrap_servers=kafka.bootstrap_servers.split(","),
            group_id=validate_group(settings.app_id),
            client_id=f"{settings.app_id}-validate",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,  # brokers like Tansu always wait the full time
            max_partition_fetch_bytes=8 * 1024 * 1024,
            session_timeout_ms=6000,  # a group join takes ~half of it on Tansu
            heartbeat_interval_ms=1000,
        )
        await self.consumer.start()
        self.add_future(self._run())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None

    async def _run(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        try:
            while not self.should_stop:
                fetched = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS,
                                                 max_records=MAX_RECORDS)
                if not fetched:
                    continue
                records = [(m.topic, m.partition, m.offset, m.key, m.value)
                           for msgs in fetched.values() for m in msgs]
                await self.runtime.handle_raw(records)
                offsets = {tp: msgs[-1].offset + 1 for tp, msgs in fetched.items() if msgs}
                try:
                    await consumer.commit(offsets)
                except KafkaError as exc:  # rebalance: re-delivered elsewhere, idempotent
                    log.warning("validate: commit failed (%r); the batch will be re-read", exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("validate stage failed; stopping the worker uncommitted")
            await self.runtime.app.crash(exc)
