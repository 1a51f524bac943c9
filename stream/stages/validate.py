"""Batch logic of the validate stage, pure (the Kafka side is stream.agents.validate).

Raw records in log order per raw partition -> raw rows for the warehouse, by-identity
envelopes (events tagged with where they were read, then this reader's watermark
claims), dead letters with the reason and the original bytes, and late events.

This is the source of event time (stream.eventtime.watermarks): each raw partition the
reader owns has a `SourceClock`, and an event older than its own partition's watermark
is late: written to the raw table and the late-events table, counted, and not
forwarded (docs/semantics.md "Event time"). Nothing else is ever late.

Events whose ids are all placeholders (stream.engine.identity.is_junk_id) have no
customer: they are kept in the raw table and counted, and not forwarded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from journeys.events import EventValidator, Rejection, Touchpoint, event_value
from stream.engine.identity import is_junk_id
from stream.eventtime.watermarks import (
    CLAIM_REFRESH_MS,
    Claim,
    SourceClock,
    encode_claims,
    source_claims,
)
from stream.stages.envelopes import EnvelopeBuilder, partition_for

RawRecord = tuple[str, int, int, bytes | None, bytes | None]
"""(topic, partition, offset, key, value) as read."""

CLAIM_MIN_INTERVAL_MS = 500  # claim-only envelopes of idle partitions: at most this often
MIN_SKEW_MS = 10 * 60_000  # read ahead of the slowest partition: at most max(this, lateness)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message with where it came from (for the dead_letters table)."""

    rejection: Rejection
    stage: str
    received_at_ms: int
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class LateEvent:
    """An event older than its source partition's watermark (the late_events table)."""

    event_id: str
    occurred_at_ms: int
    watermark_ms: int
    stage: str
    topic: str
    partition: int
    offset: int
    detected_at_ms: int


@dataclass
class ValidateBatch:
    touchpoints: list[Touchpoint] = field(default_factory=list)  # late ones too
    late: list[LateEvent] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    dead_messages: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    envelopes: EnvelopeBuilder = field(default_factory=EnvelopeBuilder)
    claims: list[Claim] = field(default_factory=list)
    unattributed: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    # properties.value left out of journey value, by reason (journeys.events.event_value)
    values_ignored: dict[str, int] = field(default_factory=dict)

    @property
    def forwarded(self) -> int:
        return len(self.touchpoints) - len(self.late) - self.unattributed


class ValidateStage:
    """One reader's source clocks and the pure validate logic.

    `assign`/`revoke` follow the reader's partition assignment; `prepare` turns one
    poll's records into everything to write out, `claims_due` says when a poll with no
    records should still send claims (idle partitions' watermarks follow the wall clock).
    """

    def __init__(self, validator: EventValidator, entry_types: Iterable[str],
                 partitions: int, *, allowed_lateness_ms: int, idle_after_ms: int) -> None:
        self.validator = validator
        self.entry_types = frozenset(entry_types)
        self.partitions = partitions  # by-identity partitions
        self.lateness_ms = allowed_lateness_ms
        self.idle_after_ms = idle_after_ms
        self.clocks: dict[int, SourceClock] = {}
        self.source_partitions = 0  # partitions of the raw topic
        self._sent_at: int | None = None

    def assign(self, partition: int, state: Sequence[int] | None, source_partitions: int,
               wall_ms: int) -> None:
        """Start reading a raw partition (state: SourceClock.state() of its last reader)."""
        self.clocks[partition] = SourceClock.restore(self.lateness_ms, state, wall_ms)
        self.source_partitions = max(self.source_partitions, source_partitions,
                                     partition + 1)
        self._sent_at = None  # claims for the new set go out with the next poll

    def revoke(self, partition: int) -> None:
        self.clocks.pop(partition, None)

    def states(self) -> dict[int, list[int]]:
        """Per owned raw partition, what to commit with its offset (commit metadata)."""
        return {p: c.state() for p, c in self.clocks.items()}

    def claims_due(self, wall_ms: int, caught_up: set[int]) -> bool:
        """Whether a poll that read nothing should send claims now: every
        CLAIM_REFRESH_MS, and every CLAIM_MIN_INTERVAL_MS while a partition is idle
        (its watermark then follows the wall clock)."""
        if self._sent_at is None:
            return True
        since = wall_ms - self._sent_at
        idle = any(c.idle_since(wall_ms, p in caught_up, self.idle_after_ms) is not None
                   for p, c in self.clocks.items())
        return since >= (CLAIM_MIN_INTERVAL_MS if idle else CLAIM_REFRESH_MS)

    def ahead(self, caught_up: set[int]) -> set[int]:
        """Partitions read further ahead of the slowest one with records left than the
        skew allowance: the reader pauses them. Event time downstream is the minimum over
        all partitions, so reading one far ahead only makes the later stages hold its
        events longer (memory, and work on every batch); this keeps them level."""
        behind = [c.mark for p, c in self.clocks.items() if p not in caught_up]
        if not behind:
            return set()
        limit = min(behind) + max(self.lateness_ms, MIN_SKEW_MS)
        return {p for p, c in self.clocks.items() if c.mark > limit}

    def prepare(self, records: Iterable[RawRecord], wall_ms: int, caught_up: set[int], *,
                with_claims: bool = True) -> ValidateBatch:
        """Validate, judge lateness, route; then attach claims to every by-identity
        partition (`with_claims`). Records of one partition must come in log order."""
        batch = ValidateBatch()
        clocks, entries, parts = self.clocks, self.entry_types, self.partitions
        for topic, partition, offset, key, value in records:
            clock = clocks.get(partition)
            if clock is None:  # read before the assignment callback ran: judge anyway
                clock = clocks[partition] = SourceClock(self.lateness_ms, wall_ms=wall_ms)
                self.source_partitions = max(self.source_partitions, partition + 1)
            result = self.validator.parse(value or b"")
            if not isinstance(result, Touchpoint):
                clock.touch(wall_ms)
                self.reject(batch, result, topic, partition, offset, key, wall_ms)
                continue
            tp = result
            batch.touchpoints.append(tp)
            mark = clock.mark
            if clock.observe(tp.occurred_at, wall_ms):
                batch.late.append(LateEvent(tp.event_id, tp.occurred_at, mark, "validate",
                                            topic, partition, offset, wall_ms))
                continue
            cust, anon = tp.customer_id, tp.anonymous_id
            route = anon if not is_junk_id(anon) else cust
            if route is None or is_junk_id(route):
                batch.unattributed += 1
                continue
            ctx = (tp.context or None) if tp.type in entries else None
            item = [tp.event_id, tp.type, tp.channel, tp.occurred_at, cust, anon, ctx,
                    partition, offset]
            if tp.properties:  # journey value: a trailing element, only when there is one
                amount, ignored = event_value(tp.properties)
                if amount is not None:
                    item.append(amount)
                elif ignored is not None:
                    batch.values_ignored[ignored] = batch.values_ignored.get(ignored, 0) + 1
            batch.envelopes.event(partition_for(route, parts), item)
        if with_claims:
            batch.claims = source_claims(clocks, wall_ms, caught_up, self.idle_after_ms)
            batch.envelopes.claims(range(parts), encode_claims(self.source_partitions,
                                                               batch.claims))
            self._sent_at = wall_ms
        return batch

    @staticmethod
    def reject(batch: ValidateBatch, rejection: Rejection, topic: str, partition: int,
                offset: int, key: bytes | None, wall_ms: int) -> None:
        code = rejection.code
        batch.rejected[code] = batch.rejected.get(code, 0) + 1
        batch.dead_messages.append(
            (key, rejection.to_dead_letter(stage="validate", received_at_ms=wall_ms)))
        batch.dead.append(DeadLetter(rejection, "validate", wall_ms, topic, partition, offset))


def late_summary(late: Sequence[LateEvent]) -> Mapping[int, tuple[int, int, int]]:
    """Per raw partition: (count, oldest occurred_at, watermark) of a batch's late events,
    for the worker's warning line."""
    out: dict[int, tuple[int, int, int]] = {}
    for e in late:
        n, oldest, mark = out.get(e.partition, (0, e.occurred_at_ms, e.watermark_ms))
        out[e.partition] = (n + 1, min(oldest, e.occurred_at_ms), max(mark, e.watermark_ms))
    return out
