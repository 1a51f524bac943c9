"""Batch writers: domain objects -> column rows -> one insert per flush (never per event).

All are idempotent under replay: touchpoints collapse on event_id, sessions on
(session_id, version); dead letters are append-only (count them DISTINCT if replays
matter).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import orjson

from journeys.events import Rejection, Touchpoint
from journeys.timeutil import now_ms
from warehouse.backend import Warehouse
from warehouse.tables import DEAD_LETTERS, LATE_EVENTS, SESSIONS, TOUCHPOINTS


def _json(value: Any) -> str:
    if not value:
        return "{}"
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _seconds(ms: int) -> int:
    """DateTime columns take epoch seconds (both backends accept ints)."""
    return ms // 1000


def touchpoint_columns(
    events: Sequence[Touchpoint], *, ingested_at_ms: int | None = None
) -> list[list[Any]]:
    """Columns in TOUCHPOINTS.columns order; a batch's repeated event_ids are sent once."""
    ingested = _seconds(now_ms() if ingested_at_ms is None else ingested_at_ms)
    ids = [e.event_id for e in events]
    if len(set(ids)) != len(ids):
        first = {eid: i for i, eid in reversed(list(enumerate(ids)))}
        events = [e for i, e in enumerate(events) if first[e.event_id] == i]
        ids = [e.event_id for e in events]
    occurred = [e.occurred_at for e in events]
    return [
        ids, [e.type for e in events], [e.channel for e in events], occurred,
        [t // 1000 for t in occurred], [e.customer_id or "" for e in events],
        [e.anonymous_id or "" for e in events], [e.source or "" for e in events],
        [_json(e.properties) for e in events], [_json(e.context) for e in events],
        [ingested] * len(ids),
    ]


def touchpoint_rows(
    events: Sequence[Touchpoint], *, ingested_at_ms: int | None = None
) -> list[tuple[Any, ...]]:
    """touchpoint_columns as rows (tests, tools)."""
    return list(zip(*touchpoint_columns(events, ingested_at_ms=ingested_at_ms), strict=True))


def write_touchpoints(
    wh: Warehouse, events: Sequence[Touchpoint], *, ingested_at_ms: int | None = None
) -> int:
    """Insert raw events (one insert). Returns rows sent (after in-batch dedup)."""
    data = touchpoint_columns(events, ingested_at_ms=ingested_at_ms)
    return wh.insert_columns(TOUCHPOINTS.name, TOUCHPOINTS.columns, data)


def session_columns(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Columns from rows given in SESSIONS.columns order (stream.engine.session_state.SessionRow
    fits).

    `started_at` is recomputed from `started_at_ms`: every row of a session id, its
    tombstone included, must land in the same toYYYYMM(started_at) partition, because
    FINAL only collapses rows within one partition.
    """
    width = len(SESSIONS.columns)
    bad = next((r for r in rows if len(r) != width), None)
    if bad is not None:
        raise ValueError(f"a sessions row has {len(bad)} values, expected {width}")
    if not rows:
        return [[] for _ in range(width)]
    (sid, customer, start_ms, end_ms, _started, events, channels, first_channel,
     version, deleted) = zip(*rows, strict=True)
    starts = [int(t) for t in start_ms]
    return [
        list(sid), list(customer), starts, [int(t) for t in end_ms],
        [t // 1000 for t in starts], [int(n) for n in events],
        [list(c) for c in channels], list(first_channel), [int(v) for v in version],
        [1 if d else 0 for d in deleted],
    ]


def session_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """session_columns as rows (tests, tools)."""
    return list(zip(*session_columns(rows), strict=True))


def write_sessions(wh: Warehouse, rows: Sequence[Sequence[Any]]) -> int:
    """Insert session upserts/tombstones (one insert). Returns rows sent."""
    return wh.insert_columns(SESSIONS.name, SESSIONS.columns, session_columns(rows))


class DeadLetterLike(Protocol):
    """What write_dead_letters reads (stream.agents.sink.DeadLetter fits). Optional attributes
    `topic`, `partition`, `offset` say where the message was read."""

    @property
    def rejection(self) -> Rejection: ...
    @property
    def stage(self) -> str: ...
    @property
    def received_at_ms(self) -> int: ...


def dead_letter_rows(letters: Sequence[DeadLetterLike]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for d in letters:
        rej = d.rejection
        partition = getattr(d, "partition", None)
        offset = getattr(d, "offset", None)
        rows.append((
            _seconds(d.received_at_ms), d.stage, rej.reason, rej.event_id or "",
            rej.raw.decode("utf-8", errors="replace"), getattr(d, "topic", None) or "",
            -1 if partition is None else int(partition), -1 if offset is None else int(offset),
        ))
    return rows


def write_dead_letters(wh: Warehouse, letters: Sequence[DeadLetterLike]) -> int:
    """Insert rejected inputs with their reason and original bytes (one insert)."""
    return wh.insert(DEAD_LETTERS.name, DEAD_LETTERS.columns, dead_letter_rows(letters))


def forget_archived_dead_letters(wh: Warehouse, topic: str, keep: Iterable[str]) -> None:
    """Delete the rows archived from `topic` (stages in `keep` are written by the worker
    itself and stay). `journeys up` does this before it replays its spool into a new
    broker: the topic's offsets start again at 0 there, so the old rows would make the
    archiver skip new letters (dead_letter_offsets), and the replay archives the old
    ones again anyway."""
    wh.execute(f"ALTER TABLE {wh.database}.{DEAD_LETTERS.name} DELETE WHERE kafka_topic = "
               "%(topic)s AND stage NOT IN %(keep)s SETTINGS mutations_sync = 1",
               {"topic": topic, "keep": tuple(keep)})


def dead_letter_offsets(wh: Warehouse, topic: str) -> dict[int, int]:
    """Highest Kafka offset stored per partition of `topic` (the dead-letter archiver
    resumes after it, so a re-read batch is not inserted twice)."""
    rows = wh.query(f"SELECT kafka_partition, max(kafka_offset) FROM {wh.database}."
                    f"{DEAD_LETTERS.name} WHERE kafka_topic = %(topic)s "
                    "GROUP BY kafka_partition", {"topic": topic})
    return {int(p): int(o) for p, o in rows}



class LateEventLike(Protocol):
    """What a late-event row is made of (stream.stages.validate.LateEvent fits)."""

    @property
    def event_id(self) -> str: ...
    @property
    def occurred_at_ms(self) -> int: ...
    @property
    def watermark_ms(self) -> int: ...
    @property
    def stage(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def detected_at_ms(self) -> int: ...


def write_late_events(wh: Warehouse, events: Sequence[LateEventLike]) -> int:
    """Insert late events (one insert): what they were older than, and where."""
    rows = [(e.event_id, max(int(e.occurred_at_ms), 0), _seconds(max(int(e.occurred_at_ms), 0)),
             max(int(e.watermark_ms), 0), e.stage, e.topic, int(e.partition), int(e.offset),
             _seconds(int(e.detected_at_ms))) for e in events]
    return wh.insert(LATE_EVENTS.name, LATE_EVENTS.columns, rows)


def late_event_counts(wh: Warehouse) -> dict[str, int]:
    """Late events per stage (the API's and the CLI's warning)."""
    rows = wh.query(f"SELECT stage, count() FROM {wh.database}.{LATE_EVENTS.name} FINAL "
                    "GROUP BY stage")
    return {str(stage): int(n) for stage, n in rows}
