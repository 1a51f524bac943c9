"""Which Kafka features work with our clients on Apache Kafka and on Tansu, measured.

Runs each check against a fresh local Apache Kafka broker (deploy.local.kafka) and the
embedded Tansu broker (deploy.local.broker), with aiokafka and kafka-python as
installed, and prints one line per check and broker: `ok` or what went wrong. Each check
is bounded in time. Nothing is asserted: the results go into docs/local-services.md.

    .venv/bin/python bench/broker_features.py                  # both brokers, ~1-2 min
    .venv/bin/python bench/broker_features.py --broker kafka

Checks:
  idempotent-aiokafka   AIOKafkaProducer(enable_idempotence=True): 1000 sends, read back
                        exactly once each
  idempotent-kafka-python  the same with KafkaProducer(enable_idempotence=True)
  transactions          aiokafka transactional producer, consume-transform-produce:
                        begin / send / send_offsets_to_transaction / commit, then an aborted
                        transaction; a read_committed consumer sees only the committed
                        records and the group's committed offset is the one sent
  list-offsets-latest   end_offsets() after 3 separately flushed batches (7+5+11 records)
                        equals 23, with kafka-python and aiokafka
  offsets-for-times     offsets_for_times(timestamp of the 2nd batch) is offset 7
  commit-metadata       consumer.commit({tp: OffsetAndMetadata(5, "meta", -1)}) then
                        committed(tp, metadata=True) from a new consumer of the group
  compacted-topic       create with cleanup.policy=compact is accepted, the config reads
                        back, and the log cleaner really drops overwritten keys
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as ATP
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.structs import OffsetAndMetadata

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy.local.broker import LocalBroker  # noqa: E402
from deploy.local.kafka import LocalKafka  # noqa: E402
from deploy.local.kafka_jars import KAFKA_VERSION  # noqa: E402
from journeys.topics import ensure_topics  # noqa: E402

TIMEOUT_S = 45.0
# Tansu-friendly timings (harmless on Kafka): short fetch waits, short group joins.
CONSUMER = {"fetch_max_wait_ms": 50, "session_timeout_ms": 6_000, "heartbeat_interval_ms": 1_000}


def name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def kp_consumer(bootstrap: str, **kw: Any) -> KafkaConsumer:
    return KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         auto_offset_reset="earliest", **CONSUMER, **kw)


def read_all(bootstrap: str, topic: str, expect: int, **kw: Any) -> list[Any]:
    """Everything in `topic` (assigned, from the start) until `expect` records or 10 s quiet."""
    c = kp_consumer(bootstrap, **kw)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or {0})]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        got: list[Any] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(got) < expect:
            for records in c.poll(timeout_ms=500).values():
                got.extend(records)
        got.extend(r for rs in c.poll(timeout_ms=1000).values() for r in rs)  # anything extra
        return got
    finally:
        c.close()


# -- checks: each returns a short detail or raises -----------------------------------------


def idempotent_aiokafka(bootstrap: str) -> str:
    topic = name("idem-aio")
    ensure_topics(bootstrap, [topic], 2)

    async def run() -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
        try:
            await p.start()
            futures = [await p.send(topic, key=str(i % 7).encode(), value=str(i).encode())
                       for i in range(1000)]
            await asyncio.gather(*futures)
        finally:
            await p.stop()

    asyncio.run(asyncio.wait_for(run(), TIMEOUT_S))
    values = sorted(int(r.value) for r in read_all(bootstrap, topic, 1000))
    if values != list(range(1000)):
        raise AssertionError(f"read back {len(values)} records, {len(set(values))} distinct")
    return "1000 sent, 1000 read back, no duplicates"


def idempotent_kafka_python(bootstrap: str) -> str:
    topic = name("idem-kp")
    ensure_topics(bootstrap, [topic], 2)
    p = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    try:
        for i in range(1000):
            p.send(topic, key=str(i % 7).encode(), value=str(i).encode())
        p.flush(timeout=TIMEOUT_S)
    finally:
        p.close(timeout=5)
    values = sorted(int(r.value) for r in read_all(bootstrap, topic, 1000))
    if values != list(range(1000)):
        raise AssertionError(f"read back {len(values)} records, {len(set(values))} distinct")
    return "1000 sent, 1000 read back, no duplicates"


def transactions(bootstrap: str) -> str:
    src, dst, group = name("tx-in"), name("tx-out"), name("tx-group")
    ensure_topics(bootstrap, {src: 1, dst: 1})
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(20):
        p.send(src, value=f"in-{i}".encode())
    p.flush(timeout=30)
    p.close()

    async def run() -> None:
        consumer = AIOKafkaConsumer(src, bootstrap_servers=bootstrap, group_id=group,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    isolation_level="read_committed", **CONSUMER)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap,
                                    transactional_id=name("tx-id"), acks="all")
        try:
            await consumer.start()
            await producer.start()
            records: list[Any] = []
            while len(records) < 20:
                for batch in (await consumer.getmany(timeout_ms=1000)).values():
                    records.extend(batch)
            await producer.begin_transaction()
            for r in records:
                await producer.send(dst, value=r.value.replace(b"in-", b"out-"))
            await producer.send_offsets_to_transaction({ATP(src, 0): records[-1].offset + 1},
                                                       group)
            await producer.commit_transaction()
            await producer.begin_transaction()
            await producer.send(dst, value=b"aborted")
            await producer.abort_transaction()
        finally:
            await producer.stop()
            await consumer.stop()

    asyncio.run(asyncio.wait_for(run(), TIMEOUT_S))
    seen = [r.value for r in read_all(bootstrap, dst, 21, isolation_level="read_committed")]
    if sorted(seen) != sorted(f"out-{i}".encode() for i in range(20)):
        raise AssertionError(f"read_committed consumer saw {len(seen)} records: {seen[:3]}...")
    c = kp_consumer(bootstrap, group_id=group)
    try:
        committed = c.committed(TopicPartition(src, 0))
    finally:
        c.close()
    if committed != 20:
        raise AssertionError(f"group offset after the transaction is {committed}, want 20")
    return "20 committed records visible, aborted one hidden, group offset 20"


def _three_batches(bootstrap: str) -> tuple[str, int]:
    """7 + 5 + 11 records, each batch flushed on its own; returns (topic, ts of batch 2)."""
    topic = name("offsets")
    ensure_topics(bootstrap, [topic], 1)
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    second_ts = 0
    try:
        for batch, count in enumerate((7, 5, 11)):
            ts = int(time.time() * 1000)
            if batch == 1:
                second_ts = ts
            for i in range(count):
                p.send(topic, value=f"{batch}-{i}".encode(), timestamp_ms=ts)
            p.flush(timeout=30)
            time.sleep(0.05)
    finally:
        p.close()
    return topic, second_ts


def list_offsets_latest(bootstrap: str) -> str:
    topic, _ = _three_batches(bootstrap)
    tp = TopicPartition(topic, 0)
    c = kp_consumer(bootstrap)
    try:
        kp_end = c.end_offsets([tp])[tp]
    finally:
        c.close()

    async def aio_end() -> int:
        ac = AIOKafkaConsumer(bootstrap_servers=bootstrap, **CONSUMER)
        await ac.start()
        try:
            atp = ATP(topic, 0)
            return (await ac.end_offsets([atp]))[atp]
        finally:
            await ac.stop()

    aio = asyncio.run(asyncio.wait_for(aio_end(), TIMEOUT_S))
    if kp_end != 23 or aio != 23:
        raise AssertionError(f"end offset kafka-python {kp_end}, aiokafka {aio}; true end 23")
    return "end offset 23 with kafka-python and aiokafka"


def offsets_for_times(bootstrap: str) -> str:
    topic, second_ts = _three_batches(bootstrap)
    tp = TopicPartition(topic, 0)
    c = kp_consumer(bootstrap)
    try:
        found = c.offsets_for_times({tp: second_ts})[tp]
    finally:
        c.close()
    if found is None or found.offset != 7:
        raise AssertionError(f"offsets_for_times gave {found}; want offset 7")
    return "offset 7 for the 2nd batch's timestamp"


def commit_metadata(bootstrap: str) -> str:
    topic, group = name("meta"), name("meta-group")
    ensure_topics(bootstrap, [topic], 1)
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(10):
        p.send(topic, value=str(i).encode())
    p.flush(timeout=30)
    p.close()
    tp = TopicPartition(topic, 0)
    c = kp_consumer(bootstrap, group_id=group)
    try:
        c.assign([tp])
        c.commit({tp: OffsetAndMetadata(5, "meta", -1)})
    finally:
        c.close()
    c = kp_consumer(bootstrap, group_id=group)
    try:
        got = c.committed(tp, metadata=True)
    finally:
        c.close()
    if got is None or got.offset != 5 or got.metadata != "meta":
        raise AssertionError(f"read back {got}")
    return 'read back offset 5, metadata "meta"'


def compacted_topic(bootstrap: str) -> str:
    topic = name("compact")
    configs = {"cleanup.policy": "compact", "segment.ms": "100",
               "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "100",
               "min.compaction.lag.ms": "0"}
    ensure_topics(bootstrap, [topic], 1, configs=configs)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        admin.close()
    if "compact" not in repr(described):
        raise AssertionError(f"cleanup.policy does not read back: {described!r}"[:300])
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for wave in range(3):  # each wave lands in a new segment (segment.ms=100)
            for i in range(100):
                p.send(topic, key=str(i % 10).encode(), value=f"{wave}-{i}".encode())
            p.flush(timeout=30)
            time.sleep(0.5)
        p.send(topic, key=b"roll", value=b"x")
        p.flush(timeout=30)
    finally:
        p.close()
    started = time.monotonic()
    while time.monotonic() - started < TIMEOUT_S:
        left = len(read_all(bootstrap, topic, 301))
        if left < 301:
            return (f"accepted, reads back; cleaner compacted 301 records to {left} "
                    f"within {time.monotonic() - started:.0f} s")
        time.sleep(3)
    return f"accepted and reads back, but nothing compacted within {TIMEOUT_S:.0f} s"


CHECKS: dict[str, Callable[[str], str]] = {
    "idempotent-aiokafka": idempotent_aiokafka,
    "idempotent-kafka-python": idempotent_kafka_python,
    "transactions": transactions,
    "list-offsets-latest": list_offsets_latest,
    "offsets-for-times": offsets_for_times,
    "commit-metadata": commit_metadata,
    "compacted-topic": compacted_topic,
}


@contextlib.contextmanager
def brokers(which: str) -> Iterator[list[tuple[str, str]]]:
    started: list[Any] = []
    try:
        out = []
        if which in ("kafka", "both"):
            started.append(LocalKafka().start())
            out.append((f"Kafka {KAFKA_VERSION}", started[-1].bootstrap_servers))
        if which in ("tansu", "both"):
            started.append(LocalBroker().start())
            out.append(("Tansu", started[-1].bootstrap_servers))
        yield out
    finally:
        for b in started:
            b.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=("kafka", "tansu", "both"), default="both")
    parser.add_argument("--check", action="append", choices=sorted(CHECKS))
    args = parser.parse_args()
    import aiokafka
    import kafka

    print(f"aiokafka {aiokafka.__version__}, kafka-python {kafka.__version__}")
    with brokers(args.broker) as targets:
        for check in args.check or CHECKS:
            for label, bootstrap in targets:
                t0 = time.monotonic()
                try:
                    result = "ok: " + CHECKS[check](bootstrap)
                except Exception as exc:  # reported, not raised
                    result = f"FAILED: {type(exc).__name__}: {exc}"[:300]
                print(f"{check:<24} {label:<12} {result}  [{time.monotonic() - t0:.1f} s]",
                      flush=True)


if __name__ == "__main__":
    main()
