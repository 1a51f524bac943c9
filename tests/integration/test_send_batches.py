"""stream.agents.context.send_all with record batches (`create_batch`/`send_batch` per
partition, what the worker does): on the real broker every record arrives once, in the
order sent per partition, also around a record larger than a batch and past a full
batch; records without a partition still go one by one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, TopicPartition

from journeys.settings import KafkaConfig
from journeys.topics import PRODUCER_MAX_REQUEST_BYTES, ensure_journey_topics
from stream.agents.context import send_all


def _read_all(servers: str, topic: str, partitions: int, expected: int) -> dict[int, list[Any]]:
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        got: dict[int, list[Any]] = {p: [] for p in range(partitions)}
        for msg in consumer:
            got[msg.partition].append((msg.key, msg.value))
            if sum(map(len, got.values())) >= expected:
                break
        return got
    finally:
        consumer.close()


def test_send_all_in_batches_keeps_every_record_in_order(
        broker: Any, unique_name: Callable[[str], str]) -> None:
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers,
                        topic_prefix=unique_name("sb"), partitions=2)
    ensure_journey_topics(kafka)
    topic = kafka.by_customer_topic
    messages: list[tuple[int | None, bytes | None, bytes | None]] = []
    for i in range(1200):  # ~100 KB per partition: several 16 KiB batches
        messages.append((i % 2, f"k{i}".encode(), f"value-{i}-".encode() * 8))
        if i == 300:
            messages.append((1, b"big", b"x" * 300_000))  # larger than a batch
        if i % 400 == 0:
            messages.append((None, None, f"unparted-{i}".encode()))

    async def run() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all",
                                    max_request_size=PRODUCER_MAX_REQUEST_BYTES)
        await producer.start()
        try:
            async def send(topic: str, key: Any, value: Any, partition: Any, _ts: Any,
                           _headers: Any) -> Any:
                return await producer.send(topic, value, key=key, partition=partition)

            ctx: Any = SimpleNamespace(send=send, batches=lambda: producer)
            return await send_all(ctx, topic, messages)
        finally:
            await producer.stop()

    assert asyncio.run(run()) == len(messages)
    got = _read_all(kafka.bootstrap_servers, topic, 2, len(messages))
    unparted = [v for p in got for k, v in got[p] if v.startswith(b"unparted-")]
    assert sorted(unparted) == sorted(v for p, _k, v in messages if p is None)
    for p in range(2):
        want = [(k, v) for q, k, v in messages if q == p]
        assert [kv for kv in got[p] if not kv[1].startswith(b"unparted-")] == want
