"""CPU of the worker's send path per record: `stream.agents.context.send_all` with the
per-record `send` (one future per record) against record batches per partition
(`create_batch`/`send_batch`), to a local Apache Kafka (started and stopped here).

Records like the changelog's (200-byte values, keys, explicit partitions), sent in
groups of `--group` (a batch's worth of table values) and waited for, as `store` does.
Process CPU time of this process only (the broker is another process).

    .venv/bin/python bench/bench_send.py --records 50000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy.local.kafka import LocalKafka  # noqa: E402
from journeys.settings import KafkaConfig  # noqa: E402
from journeys.topics import ensure_journey_topics  # noqa: E402
from stream.agents.context import send_all  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Ctx:
    """The two fields of StageContext that send_all reads."""

    def __init__(self, producer: AIOKafkaProducer, batched: bool) -> None:
        self.batches = (lambda: producer) if batched else None

        async def send(topic: str, key: Any, value: Any, partition: Any, ts: Any,
                       headers: Any) -> Any:
            return await producer.send(topic, value, key=key, partition=partition)
        self.send = send


async def run(servers: str, topic: str, records: int, group: int, parts: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5,
                                enable_idempotence=True)
    await producer.start()
    try:
        value = os.urandom(100).hex().encode()
        for batched in (False, True, False, True):
            ctx: Any = Ctx(producer, batched)
            c0 = cpu()
            for start in range(0, records, group):
                await send_all(ctx, topic, [((start + i) % parts, f"k{start + i}".encode(),
                                             value) for i in range(group)])
            took = cpu() - c0
            print(f"  {'batches' if batched else 'per record':<10} "
                  f"{took * 1e6 / records:6.1f} µs CPU per record", flush=True)
    finally:
        await producer.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--group", type=int, default=200)
    args = ap.parse_args()
    with LocalKafka() as b:
        kafka = KafkaConfig(bootstrap_servers=b.bootstrap_servers, topic_prefix="sendbench",
                            partitions=4)
        ensure_journey_topics(kafka)
        print(f"{args.records:,} records of 200 bytes, groups of {args.group}, 4 partitions")
        asyncio.run(run(b.bootstrap_servers, kafka.by_customer_topic, args.records,
                        args.group, 4))


if __name__ == "__main__":
    main()
