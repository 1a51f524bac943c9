"""How far each raw partition already is in event time (before an import).

An import in time order is late only where the raw topic already holds newer events:
a partition's watermark is its newest occurred_at minus the allowed lateness
(docs/semantics.md "Event time"). This reads the last records of each raw partition
and returns the newest event time found there, so `journeys ingest` can say how many
of its events the stream will count late, and where, instead of losing them silently.

The last LOOKBACK records are read, from the high-water mark a Fetch reports (Tansu's
ListOffsets answers short of the end; the Fetch response is right on both brokers).
Records that are not touchpoints are skipped.
"""

from __future__ import annotations

import time

import orjson
from kafka import KafkaConsumer, TopicPartition

from journeys.events import EventValidator, Touchpoint
from journeys.settings import KafkaConfig

LOOKBACK = 50


def newest_event_times(kafka: KafkaConfig, *, timeout_s: float = 10.0) -> dict[int, int]:
    """Raw partition -> newest occurred_at among its last LOOKBACK records (partitions
    with no touchpoint are left out)."""
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers,
                             enable_auto_commit=False, fetch_max_wait_ms=20,
                             max_partition_fetch_bytes=1 << 20)
    validator = EventValidator(None)
    out: dict[int, int] = {}
    try:
        parts = [TopicPartition(kafka.raw_topic, p)
                 for p in sorted(consumer.partitions_for_topic(kafka.raw_topic) or ())]
        if not parts:
            return out
        consumer.assign(parts)
        consumer.seek_to_end(*parts)
        ends = {tp: consumer.position(tp) for tp in parts}
        todo = {tp for tp, end in ends.items() if end > 0}
        for tp in todo:
            consumer.seek(tp, max(0, ends[tp] - LOOKBACK))
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200, max_records=5000).items():
                for r in records:
                    try:
                        event = validator.parse(r.value or b"")
                    except (ValueError, orjson.JSONDecodeError):
                        continue
                    if isinstance(event, Touchpoint):
                        out[tp.partition] = max(out.get(tp.partition, event.occurred_at),
                                                event.occurred_at)
            for tp in list(todo):
                hw = consumer.highwater(tp)
                if hw is not None and consumer.position(tp) >= hw:
                    todo.discard(tp)
    finally:
        consumer.close()
    return out
