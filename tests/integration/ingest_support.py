"""Helpers for the ingest integration tests: topics per test, reading a topic back."""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from deploy.topics import ensure_journey_topics
from journeys.settings import KafkaConfig


def kafka_config(bootstrap_servers: str, prefix: str, partitions: int = 3) -> KafkaConfig:
    """A KafkaConfig with its own topics, created up front (never auto-created)."""
    config = KafkaConfig(bootstrap_servers=bootstrap_servers, topic_prefix=prefix,
                         partitions=partitions)
    ensure_journey_topics(config)
    return config


def read_topic(
    bootstrap_servers: str,
    topic: str,
    expected: int | None = None,
    *,
    timeout: float = 30.0,
    idle: float = 1.5,
) -> list[ConsumerRecord]:
    """Every record of `topic` from the beginning: until `expected` are read (then a
    short extra poll to catch surplus), or, without `expected`, until `idle` seconds
    pass with nothing new. Assigns partitions: no consumer group to get stuck."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                             auto_offset_reset="earliest", fetch_max_wait_ms=50,
                             allow_auto_create_topics=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)
                                                          or ())]
        assert parts, f"topic {topic} does not exist"
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            new = [r for rs in batch.values() for r in rs]
            records.extend(new)
            now = time.monotonic()
            if new:
                last_new = now
            if expected is not None and len(records) >= expected:
                if now - last_new > 0.5:
                    break
            elif expected is None and now - last_new > idle:
                break
        return records
    finally:
        consumer.close()
