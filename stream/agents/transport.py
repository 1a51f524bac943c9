"""Faust's aiokafka transport with these changes.

1. Fetch wait: Faust hard-codes `fetch_max_wait_ms=1500`. Brokers that always wait
   the full time (Tansu does) then deliver at most one fetch per 1.5 s per worker,
   which caps throughput and adds 1.5 s of latency. We set it per app.
2. High-water marks for table recovery: Faust asks ListOffsets(LATEST) how far to
   read a changelog. Tansu answers with the start of the last produced batch + 1, so
   recovery stops early and tables come back stale. A Fetch response carries the true
   high-water mark, so we fetch one record at the listed offset and take the larger.
   Kept on Apache Kafka too, whose answer is right: with it off there, the scale-out
   test failed in 2 of 11 loaded runs (one a table recovery stalled for minutes; not
   understood yet), and on Kafka it costs one small fetch per recovery.
3. Resuming sources after a restart: see `Consumer`.
4. Records stranded by a rebalance: see `Consumer.stranded_offset`.
5. Records skipped after a rebalance: see `OffsetGuard`.
6. An idempotent producer where the broker allows it: see `Producer`.

Installed per app by `JourneysApp._new_transport` (no global registry is touched).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from aiokafka import AIOKafkaConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.utils.functional import consecutive_numbers
from kafka import KafkaConsumer, TopicPartition

log = logging.getLogger(__name__)

DEFAULT_FETCH_MAX_WAIT_MS = 20


def stage_consumer(bootstrap_servers: str, group_id: str, client_id: str, *,
                   fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS,
                   **options: Any) -> AIOKafkaConsumer:
    """A plain aiokafka consumer for a stage outside Faust (validate, dead-letter
    archiver): manual commits from the earliest offset, and the group timings that
    work on Tansu (it waits the full fetch_max_wait_ms on every fetch, and a group join
    takes about half the session timeout)."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers.split(","),
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        **options,
    )


def fetched_highwaters(
    bootstrap_servers: Sequence[str],
    listed: Mapping[TP, int],
    *,
    timeout_s: float = 10.0,
) -> dict[TP, int]:
    """High-water marks as reported by Fetch responses (blocking; run in a thread).

    Partitions the broker lists as empty are not fetched. Any partition whose fetch
    does not answer in time keeps its listed value.
    """
    result = dict(listed)
    wanted = {TopicPartition(tp.topic, tp.partition): tp for tp, off in listed.items() if off > 0}
    if not wanted:
        return result
    consumer = KafkaConsumer(
        bootstrap_servers=list(bootstrap_servers),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
        max_partition_fetch_bytes=1024,
        request_timeout_ms=max(int(timeout_s * 1000), 2000),
    )
    try:
        consumer.assign(list(wanted))
        for ktp, tp in wanted.items():
            consumer.seek(ktp, listed[tp] - 1)
        deadline = time.monotonic() + timeout_s
        pending = dict(wanted)
        while pending and time.monotonic() < deadline:
            consumer.poll(timeout_ms=200, max_records=1)
            for ktp in list(pending):
                hw = consumer.highwater(ktp)
                if hw is not None:
                    tp = pending.pop(ktp)
                    result[tp] = max(result[tp], hw)
        if pending:
            log.warning("no fetched high-water mark for %s; using listed offsets",
                        sorted(str(t) for t in pending.values()))
    finally:
        consumer.close()
    return result


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """aiokafka consumer thread with a configurable fetch wait and fetched high-waters."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka passes this to its Fetcher at start(); Faust offers no setting.
        consumer._fetch_max_wait_ms = getattr(
            self.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS
        )
        return consumer

    async def group_committed(self, partitions: list[TP]) -> dict[TP, int]:
        """The group's committed offsets of any partitions (owned here or not), asked
        on the consumer's own thread and event loop (aiokafka's connections are not
        shared across loops: a call from the app's loop broke a connection's request
        queue, measured)."""
        result: dict[TP, int] = await self.call_thread(self._group_committed, partitions)
        return result

    async def _group_committed(self, partitions: list[TP]) -> dict[TP, int]:
        coordinator = self._ensure_consumer()._coordinator
        offsets = await coordinator.fetch_committed_offsets(partitions)
        return {TP(tp.topic, tp.partition): int(meta.offset) for tp, meta in offsets.items()
                if meta.offset is not None and meta.offset >= 0}

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        listed = await super()._highwaters(partitions)
        if self.consumer.in_transaction or not listed:
            return listed
        servers = faust_aiokafka.server_list(
            cast(Any, self.transport).url, cast(Any, self.transport).default_port
        )
        try:
            return await asyncio.to_thread(fetched_highwaters, servers, listed)
        except Exception as exc:  # recovery must not fail because of the workaround
            log.warning("fetching high-water marks failed (%r); using listed offsets", exc)
            return listed


class Consumer(faust_aiokafka.Consumer):
    """Faust consumer with two fixes to how a (re)started worker resumes its sources.

    Race: after table recovery Faust resumes the source partitions and only then seeks
    them to the committed offsets. Records fetched before the seek are delivered in
    between; the first one after the seek makes Faust record a "gap" (offsets it thinks
    were never delivered) over offsets that were delivered, and filling that gap later
    let commits run ahead of events still waiting in a batch, or stall (both measured
    after a SIGKILL and restart). We resume source partitions only after the seek, and
    never let a gap carry a commit past the highest acked offset.
    """

    _deferred_resume: set[TP] | None = None

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        sources = {tp for tp in tps if not self._is_changelog_tp(tp)}
        if sources:  # Faust seeks right after resuming sources: resume them then
            self._deferred_resume = (self._deferred_resume or set()) | sources
        super().resume_partitions(tps - sources)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        deferred, self._deferred_resume = self._deferred_resume, None
        if deferred:
            super().resume_partitions(deferred & set(self.assignment()))

    def _new_offset(self, tp: TP) -> int | None:
        """Faust's `_new_offset`, but gap offsets are folded in only up to the highest
        acked offset, and offsets are de-duplicated (the stock code assumes unique
        offsets and otherwise advances one offset per commit)."""
        acked = self._acked[tp]
        if not acked:
            return None
        gap: Any = self._gap[tp]
        if gap:
            top = max(acked) + 1
            filled = [o for iv in gap.overlap(0, top) for o in range(iv.begin, min(iv.end, top))]
            if filled:
                acked.extend(filled)
                gap.chop(0, top)
        acked[:] = sorted(set(acked))
        committed = self._committed_offset[tp]
        if committed and acked[0] - committed > 1:
            return None  # the next offset to commit has not been acked yet
        run = next(consecutive_numbers(acked))
        del acked[: len(run)]
        self._acked_index[tp].difference_update(run)
        return run[-1] + 1


    def lag(self) -> dict[tuple[str, int], int]:
        """Records behind the log end per assigned partition: the high-water of the
        last fetch minus the committed offset (where a restart resumes). Partitions
        never committed by this worker are left out; changelogs are not processed."""
        try:
            consumer = self._thread._ensure_consumer()
            assigned = list(consumer.assignment())
        except Exception:  # not started yet
            return {}
        out = {}
        for tp in assigned:
            committed = self._committed_offset.get(tp)
            hw = consumer.highwater(tp)
            if committed is None or hw is None or self._is_changelog_tp(tp):
                continue
            out[(tp.topic, tp.partition)] = max(0, hw - committed)
        return out

    async def _seek(self, partition: TP, offset: int) -> None:
        """Faust seeks from the app's thread into aiokafka, whose fetcher runs on the
        consumer thread: measured, a seek during a fetch broke the fetcher (KeyError in
        `fetched_records`, the worker crashed). We seek on the consumer's thread."""
        consumer = self._thread._ensure_consumer()
        await self._thread.call_thread(consumer.seek, partition, offset)

    async def group_committed(self, *partitions: TP) -> dict[TP, int]:
        """The consumer group's committed offsets (`ConsumerThread.group_committed`)."""
        return await cast(ConsumerThread, self._thread).group_committed(list(partitions))

    async def start_offset(self, tp: TP) -> int:
        """Where this group's processing of `tp` resumes: its committed offset, or,
        for a partition the group never committed, the log start (the consumer's
        auto_offset_reset is "earliest")."""
        committed = self._committed_offset.get(tp)
        if committed is not None:
            return int(committed)
        return int((await self.earliest_offsets(tp)).get(tp, 0))

    async def stranded_offset(self, tp: TP) -> int | None:
        """`start_offset(tp)` if records after it were fetched but never delivered,
        else None.

        Measured with two workers and one SIGKILLed (tests/integration/
        test_stream_journeys.py): after the rebalance, a partition this worker kept
        could end with aiokafka's fetch position at the high-water mark while Faust
        had delivered nothing past the committed offset, no ack pending, and so no
        commit ever again; the stage stalled for good. Measured again with three
        workers on one partition (tests/integration/test_stream_matrix.py, ~1 run in
        5): the first two records of the handovers topic were fetched during the
        start-up rebalance and never delivered, and as the group had never
        committed that partition the check must start from the log start. The
        caller re-seeks such a partition once the condition has held for a while:
        the records come again, and every stage is idempotent to re-delivery.
        """
        try:
            consumer = self._thread._ensure_consumer()
            state = consumer._subscription.subscription.assignment.state_value(tp)
            position = state.position if state is not None else None
            hw = consumer.highwater(tp)
        except Exception:  # not assigned (any more), consumer not ready
            return None
        read = self._read_offset.get(tp)
        if position is None or not hw or self._acked.get(tp):
            return None  # an empty log strands nothing
        delivered_all = read is not None and read >= hw - 1
        if position < hw or delivered_all:
            return None
        start = await self.start_offset(tp)
        return start if start < hw else None


class Producer(faust_aiokafka.Producer):
    """Faust's producer, idempotent when the app asks for it (`idempotent_producer`,
    from KafkaConfig: Apache Kafka yes, Tansu no). Faust turns idempotence on only
    with transactions."""

    def _settings_extra(self) -> Mapping[str, Any]:
        extra = dict(super()._settings_extra())
        if getattr(self.app, "idempotent_producer", False):
            extra.update(acks="all", enable_idempotence=True)
        return extra


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
    Producer = Producer


class OffsetGuard:
    """Makes sure an agent processes each source partition's records without a hole.

    Measured on Apache Kafka with two workers, one SIGKILLed (tests/integration/
    test_stream_journeys.py, ~1 run in 4): after the rebalance a newly assigned
    partition's first delivered record came *after* its committed offset (position
    23, committed 19); the records in between were taken from the fetcher while the
    stream flow was suspended for recovery and dropped, and Faust's gap bookkeeping
    then committed past them: whole batches of events were lost.

    `admit` checks every batch against the next offset expected per partition (its
    `Consumer.start_offset` when the partition was (re)assigned, then one past the last
    admitted record). A record above it means records are missing: that partition's
    records in the batch are held back (an extra reference makes their ack a no-op, so
    nothing is committed past the hole) and the partition is sought back to the
    expected offset, so the missing records come again, in order. Records below it
    are re-deliveries and pass (every stage recognises those). Records of a partition
    no longer assigned (left in a batch by a rebalance) are held back too: the new
    owner processes them.
    """

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer  # callable returning Faust's consumer
        self.expected: dict[TP, int] = {}
        self.holes = 0

    def reset(self) -> None:
        """After a rebalance: start again from the committed offsets."""
        self.expected.clear()


    async def admit(self, events: Sequence[Any]) -> list[Any]:
        """The events to process, in order; the rest are held back and re-read."""
        admitted: list[Any] = []
        holes: dict[TP, int] = {}
        assigned = self._consumer().assignment()
        for event in events:
            msg = event.message
            tp = msg.tp
            if tp in holes or tp not in assigned:
                msg.incref()  # its ack must not count: it comes again
                continue
            want = self.expected.get(tp)
            if want is None:
                want = await self._consumer().start_offset(tp)
            if msg.offset > want:
                holes[tp] = want
                msg.incref()
                continue
            self.expected[tp] = max(want, msg.offset + 1)
            admitted.append(event)
        for tp, offset in holes.items():
            self.holes += 1
            log.warning("%s: records from offset %d were never delivered (the next one "
                        "came after them); seeking back to read them", tp, offset)
            await self._consumer().seek(tp, offset)
        return admitted
