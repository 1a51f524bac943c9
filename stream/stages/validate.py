"""Batch logic of the validate stage: raw records -> raw rows, by-identity envelopes and
dead letters, pure (the Kafka side is stream.agents.validate).

Events whose ids are all placeholders (stream.engine.identity.is_junk_id) have no
customer: they are kept in the raw table and counted, and not forwarded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from journeys.events import EventValidator, Rejection, Touchpoint
from stream.engine.identity import is_junk_id
from stream.stages.envelopes import EnvelopeBuilder, partition_for


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message with where it came from (for the dead_letters table)."""

    rejection: Rejection
    stage: str
    received_at_ms: int
    topic: str
    partition: int
    offset: int


@dataclass
class ValidateBatch:
    touchpoints: list[Touchpoint] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    dead_messages: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    envelopes: EnvelopeBuilder = field(default_factory=EnvelopeBuilder)
    unattributed: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class ValidateStage:
    """Pure: raw records in, everything to write out."""

    def __init__(self, validator: EventValidator, entry_types: Iterable[str],
                 partitions: int) -> None:
        self.validator = validator
        self.entry_types = frozenset(entry_types)
        self.partitions = partitions

    def parse(self, records: Iterable[tuple[str, int, int, bytes | None, bytes | None]],
              received_ms: int) -> tuple[list[tuple[int, int, Touchpoint]], ValidateBatch]:
        """records: (topic, partition, offset, key, value). Returns the valid events as
        (partition, offset, event) and a batch holding the rejected ones."""
        batch = ValidateBatch()
        valid: list[tuple[int, int, Touchpoint]] = []
        for topic, partition, offset, key, value in records:
            result = self.validator.parse(value or b"")
            if isinstance(result, Touchpoint):
                valid.append((partition, offset, result))
                continue
            rejection: Rejection = result
            code = rejection.code
            batch.rejected[code] = batch.rejected.get(code, 0) + 1
            batch.dead_messages.append(
                (key, rejection.to_dead_letter(stage="validate", received_at_ms=received_ms)))
            batch.dead.append(DeadLetter(rejection, "validate", received_ms, topic,
                                         partition, offset))
        return valid, batch

    def route(self, events: Iterable[Touchpoint], batch: ValidateBatch) -> None:
        """Add events (in release order) to the raw rows and the by-identity envelopes."""
        entries = self.entry_types
        for tp in events:
            batch.touchpoints.append(tp)
            cust, anon = tp.customer_id, tp.anonymous_id
            route = anon if not is_junk_id(anon) else cust
            if is_junk_id(route):
                batch.unattributed += 1
                continue
            ctx = (tp.context or None) if tp.type in entries else None
            batch.envelopes.event(
                partition_for(route, self.partitions),  # type: ignore[arg-type]
                [tp.event_id, tp.type, tp.channel, tp.occurred_at, cust, anon, ctx])

    def prepare(self, records: Iterable[tuple[str, int, int, bytes | None, bytes | None]],
                received_ms: int) -> ValidateBatch:
        """parse + route in time order, without holding anything back (tests, tools)."""
        valid, batch = self.parse(records, received_ms)
        valid.sort(key=lambda v: v[2].occurred_at)
        self.route((tp for _p, _o, tp in valid), batch)
        return batch


