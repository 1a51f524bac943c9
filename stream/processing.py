"""Batch logic of the stream stage, free of Faust so it can be tested directly.

The agents in stream.app only move bytes: they hand a batch of records to these
functions and write what comes back. Keeping the logic here is also what later stages
(identity stitching, journeys, alerts) extend: one `prepare` per batch, state read and
written once per customer, rows collected for one warehouse flush.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson

from journeys.events import Touchpoint
from stream.sessions import CustomerState, EventClock, Sessionizer, SessionRow
from stream.stats import StreamStats

# (partition, key, value) of one message of the by-customer topic
Record = tuple[int, bytes | None, bytes | None]


def encode_forward(tp: Touchpoint) -> bytes:
    """Validated event on the by-customer topic: compact JSON, time as epoch ms, so the
    next agent rebuilds it without validating again."""
    return orjson.dumps({
        "event_id": tp.event_id,
        "type": tp.type,
        "channel": tp.channel,
        "occurred_at": tp.occurred_at,
        "customer_id": tp.customer_id,
        "anonymous_id": tp.anonymous_id,
        "source": tp.source,
        "properties": tp.properties,
        "context": tp.context,
    })


def decode_forward(data: bytes) -> Touchpoint:
    return Touchpoint.model_construct(**orjson.loads(data))


def customer_key(tp: Touchpoint) -> str:
    """Key of the by-customer topic. Identity stitching will replace this lookup."""
    return tp.identity_key


@dataclass
class SessionBatch:
    """Everything one batch produces; written in one flush, then states are stored."""

    touchpoints: list[Touchpoint] = field(default_factory=list)
    session_rows: list[SessionRow] = field(default_factory=list)
    # customer key -> new state bytes, or None to delete the key
    states: dict[bytes, bytes | None] = field(default_factory=dict)
    late: int = 0
    duplicates: int = 0
    applied: int = 0
    undecodable: int = 0


class SessionStage:
    """Turns by-customer records into touchpoint rows, session rows and new states.

    Holds the per-partition event clocks, in memory only: after a restart they start
    again from the re-delivered events, and each customer's stored watermark floor keeps
    already applied events from being applied twice (stream.sessions).
    """

    def __init__(self, sessionizer: Sessionizer, allowed_lateness_ms: int) -> None:
        self.sessionizer = sessionizer
        self.allowed_lateness_ms = allowed_lateness_ms
        self.clocks: dict[int, EventClock] = {}

    def clock(self, partition: int) -> EventClock:
        clock = self.clocks.get(partition)
        if clock is None:
            clock = self.clocks[partition] = EventClock(self.allowed_lateness_ms)
        return clock

    def prepare(
        self,
        records: Iterable[Record],
        get_state: Callable[[bytes], bytes | None],
        stats: StreamStats | None = None,
    ) -> SessionBatch:
        """Apply one batch. Pure apart from the clocks; nothing is stored here."""
        batch = SessionBatch()
        decoded: list[tuple[int, bytes, Touchpoint]] = []
        for partition, key, value in records:
            if not value:
                batch.undecodable += 1
                continue
            try:
                tp = decode_forward(value)
            except (orjson.JSONDecodeError, TypeError):
                batch.undecodable += 1
                continue
            decoded.append((partition, key or customer_key(tp).encode(), tp))
            batch.touchpoints.append(tp)

        groups: dict[tuple[int, bytes], list[Touchpoint]] = defaultdict(list)
        for partition, key, tp in decoded:  # arrival order decides lateness
            if self.clock(partition).observe(tp.occurred_at):
                batch.late += 1
            else:
                groups[(partition, key)].append(tp)

        for (partition, key), events in groups.items():
            state = CustomerState.loads(get_state(key))
            delta = self.sessionizer.apply(key.decode(), state, events,
                                           watermark=self.clock(partition).watermark)
            batch.session_rows.extend(delta.rows())
            batch.applied += delta.applied
            batch.duplicates += delta.duplicates
            batch.late += delta.late
            batch.states[key] = None if state.is_empty() else state.dumps()

        if stats is not None:
            stats.events_sessionized += len(decoded)
            stats.late_events += batch.late
            stats.duplicates += batch.duplicates
            stats.events_applied += batch.applied
        return batch
