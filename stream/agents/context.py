"""What the agents of one worker share: a plain context, and the I/O every stage does.

Every agent handles a batch the same way: compute everything with its stage's pure
`prepare`, send the messages and wait for the broker's acknowledgements, write the
warehouse, store its table values and wait for their changelog records, and only then
let the batch's offsets be committed. A crash anywhere re-delivers the batch; every
sink is idempotent and every stage recognises re-delivered input (docs/stream.md
"Exactly once in effect"), so that is harmless.

The context holds no reference to the Faust app (quix-streams keeps its message context
the same way): sending and crashing are two callables, bound by stream.agents.app.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson

from journeys.definitions import Definitions
from journeys.settings import WorkerSettings
from journeys.timeutil import ms_to_iso, now_ms
from stream.agents.crash_journal import CrashJournal
from stream.agents.sink import WarehouseSink
from stream.agents.stats import StreamStats
from stream.agents.table_store import table_store
from stream.stages.envelopes import readable
from stream.stages.parts import store_order

log = logging.getLogger(__name__)

FLUSH_RETRY_DEADLINE_S = 300.0  # then the worker crashes (batch left uncommitted)
PREPARE_BYTES = 512 * 1024  # envelope bytes per pure `prepare` call (~0.3 s of CPU)

Record = tuple[int, int, bytes | None]  # (partition, offset, value)
B = TypeVar("B")


class Send(Protocol):
    """aiokafka's producer.send: returns once queued, with a future of the ack."""

    def __call__(self, topic: str, key: bytes | None, value: bytes | None,
                 partition: int | None, timestamp: int | None,
                 headers: Any) -> Awaitable[Awaitable[Any]]: ...


class Crash(Protocol):
    def __call__(self, exc: BaseException) -> Awaitable[None]: ...


@dataclass(frozen=True, slots=True)
class StageContext:
    """Settings, definitions, counters, warehouse sink, the two app callables and the
    crash journal (quarantine)."""

    settings: WorkerSettings
    definitions: Definitions
    stats: StreamStats
    sink: WarehouseSink
    send: Send
    crash: Crash
    journal: CrashJournal = field(default_factory=lambda: CrashJournal(None))
    batches: Callable[[], Any] | None = None  # the aiokafka producer, for `send_all`


async def send_all(ctx: StageContext, topic: str,
                   messages: Iterable[tuple[int | None, bytes | None, bytes | None]]) -> int:
    """Send (partition, key, value) messages; return once the broker acked all.

    With `ctx.batches` (the worker's aiokafka producer), the messages of each explicit
    partition go as record batches (`create_batch`/`send_batch`, in order): one future
    per batch instead of one per record, which was most of the client's Python cost per
    record (docs/performance.md). Messages without a partition go one by one."""
    producer: Any = ctx.batches() if ctx.batches is not None else None
    pending = []
    parted: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
    count = 0
    for partition, key, value in messages:
        count += 1
        if producer is None or partition is None:
            pending.append(await ctx.send(topic, key, value, partition, None, None))
        else:
            parted.setdefault(partition, []).append((key, value))
    for partition, records in parted.items():
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a record of {len(value or b'')} bytes does not fit "
                                     f"in a batch for {topic}[{partition}]")
        pending.append(await producer.send_batch(batch, topic, partition=partition))
    if pending:
        await asyncio.gather(*pending)
    return count


async def store(ctx: StageContext, table: Any,
                states: Mapping[bytes, tuple[int, bytes | None]]) -> None:
    """Put values in a table and wait until their changelog records (written to the
    given partition; None = a tombstone) are acknowledged. Faust's own commit-time
    flush gives up after 0.1 s without progress, so a commit could otherwise cover
    state that never reached the changelog (measured: a SIGKILL then restored stale
    sessions). Table recovery reads the changelog topic whoever wrote it; aiokafka
    directly costs ~70 us per record, Faust's send_soon path ~300 us (measured)."""
    data = table_store(table)
    topic = table.changelog_topic.get_topic_name()
    messages: list[tuple[int | None, bytes | None, bytes | None]] = []
    for key, (partition, value) in states.items():
        if value is None:
            if not data.delete(key):
                continue  # never stored here: nothing to delete
        else:
            data.put(partition, key, value)
        messages.append((partition, key, value))
    await send_all(ctx, topic, messages)


async def store_parted(ctx: StageContext, table: Any,
                       states: Mapping[bytes, tuple[int, bytes | None]]) -> None:
    """`store` in stream.stages.parts order, each group acknowledged before the next:
    new part records, heads, tombstones (a crash in between restores the previous
    value whole)."""
    for group in store_order(states):
        await store(ctx, table, group)


def byte_chunks(records: list[Record], limit: int = PREPARE_BYTES) -> list[list[Record]]:
    """Consecutive runs of records of at most `limit` value bytes (one record at least).

    A batch of a backlog can hold 64 envelopes of 2,000 events each: prepared in one go
    it held the stage's lock for ~25 s and every partition's frontier waited for the
    slowest of them (measured with 200k events). Chunks are handled one after the
    other, each like a batch of its own; the offsets are committed after the last."""
    out: list[list[Record]] = []
    size = 0
    for record in records:
        n = len(record[2] or b"")
        if not out or (size + n > limit and out[-1]):
            out.append([])
            size = 0
        out[-1].append(record)
        size += n
    return out


async def write_with_retry(ctx: StageContext, write: Callable[[], object],
                           rows: int = 0) -> None:
    """Run a blocking warehouse write (of `rows` rows, for the metrics) in a thread;
    retry with backoff, then raise."""
    delay, deadline = 0.2, time.monotonic() + FLUSH_RETRY_DEADLINE_S
    while True:
        started = time.perf_counter()
        try:
            await asyncio.to_thread(write)
        except Exception as exc:
            ctx.stats.flush_failures += 1
            if time.monotonic() + delay > deadline:
                raise
            log.warning("warehouse write failed (%r); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        ctx.stats.record_flush(time.perf_counter() - started, rows)
        return


async def run_batches(ctx: StageContext, stream: Any, max_messages: int, within_s: float,
                      handle: Callable[[list[Any]], Awaitable[None]], guard: Any) -> None:
    """A Faust agent loop: batches in, without holes (`guard`: stream.agents.transport.
    OffsetGuard), commit only what was handled completely."""
    async for batch in stream.take_events(max_messages, within=within_s):
        events = await guard.admit(batch)
        if not events:
            continue
        try:
            await handle(events)
        except BaseException as exc:
            # take_events acks the batch in its `finally`; one extra reference
            # per message makes that ack a no-op, so the offsets stay uncommitted.
            for event in events:
                event.message.incref()
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("batch failed; stopping the worker uncommitted")
                await ctx.crash(exc)
            raise


async def isolating(ctx: StageContext, stage: str, topic: str, records: list[Record],
                    prepare: Callable[[list[Record]], Awaitable[B]],
                    emit: Callable[[B], Awaitable[None]]) -> None:
    """`emit(await prepare(records))`, with the poison rule (docs/stream.md "Poison
    records") and the quarantine (stream.agents.crash_journal). When the pure `prepare`
    raises, the records are handled in two halves, in order, down to the single record
    that raises, which is dead-lettered with the exception's class and skipped; its
    neighbours are processed. Records the process died on are handled one at a time,
    and one that killed it twice alone is dead-lettered as quarantined. `emit` (I/O) is
    not guarded: a warehouse or broker outage is no fault of a record."""
    journal = ctx.journal
    verdicts = journal.verdicts(stage, topic, [(p, o) for p, o, _v in records])
    if any(v is not None for v in verdicts):
        for record, deaths in zip(records, verdicts, strict=True):
            if journal.quarantined(deaths):
                await dead_letter_record(ctx, stage, topic, record, None, deaths=deaths or 0)
            else:
                await _guarded(ctx, stage, topic, [record], prepare, emit, alone=deaths)
            journal.cleared(stage, topic, [record[:2]])
        return
    await _guarded(ctx, stage, topic, records, prepare, emit, alone=None)


async def _guarded(ctx: StageContext, stage: str, topic: str, records: list[Record],
                   prepare: Callable[[list[Record]], Awaitable[B]],
                   emit: Callable[[B], Awaitable[None]], *, alone: int | None) -> None:
    try:
        with ctx.journal.computing(stage, topic, records, alone_deaths=alone):
            batch = await prepare(records)
    except Exception as exc:
        if len(records) > 1:
            half = len(records) // 2
            await _guarded(ctx, stage, topic, records[:half], prepare, emit, alone=None)
            await _guarded(ctx, stage, topic, records[half:], prepare, emit, alone=None)
            return
        if not records:
            raise
        await dead_letter_record(ctx, stage, topic, records[0], exc)
        return
    await emit(batch)


async def dead_letter_record(ctx: StageContext, stage: str, topic: str, record: Record,
                             exc: Exception | None, *, deaths: int = 0) -> None:
    """Send one record that made a stage raise (`exc`), or killed the worker `deaths`
    times (exc None), to the dead-letter topic (the archiver copies it to the
    `dead_letters` table): reason `stage_error: <class> at topic[partition]@offset` or
    `quarantined: killed the worker N times at ...`, the stage, the original: the
    record's text, or for a binary envelope its JSON rendering plus the exact bytes as
    `original_base64` (stream.stages.envelopes.readable)."""
    partition, offset, value = record
    where = f"{topic}[{partition}]@{offset}"
    if exc is None:
        log.error("%s: record %s killed the worker %d times while handled alone: "
                  "quarantined (dead-lettered and skipped)", stage, where, deaths)
        reason, code, error = f"quarantined: killed the worker {deaths} times at {where}", \
            "quarantined", f"the process died {deaths} times while handling this record alone"
        ctx.stats.quarantined_records += 1
    else:
        log.error("%s: record %s raised %r: dead-lettered and skipped (poison rule)",
                  stage, where, exc, exc_info=exc)
        reason, code, error = f"stage_error: {type(exc).__name__} at {where}", \
            "stage_error", repr(exc)[:1000]
        ctx.stats.poison_records += 1
    ctx.stats.rejected[code] += 1
    original, exact = readable(value or b"")
    letter = {"reason": reason, "stage": stage, "event_id": None,
              "received_at": ms_to_iso(now_ms()), "original": original, "error": error}
    if not exact:  # a binary envelope (stream.stages.envelopes): its bytes, exactly
        letter["original_base64"] = base64.b64encode(value or b"").decode()
    await send_all(ctx, ctx.settings.kafka.dead_letter_topic,
                   [(None, None, orjson.dumps(letter))])
