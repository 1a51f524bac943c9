"""Apache Kafka (deploy.local.kafka) next to the embedded Tansu broker, in one run.

Prints, for the local Apache Kafka broker: storage format + start time to ready over
several cold starts (each in a fresh temp dir), the JVM's RSS at idle and after the
load; and for both brokers: aiokafka produce and consume rates on one topic
(N small messages, acks=all), measured the same way in the same run. Nothing is
asserted: the figures go into docs/local-services.md.

    .venv/bin/python bench/bench_brokers.py                     # 200k x 100 B, ~1 minute
    .venv/bin/python bench/bench_brokers.py --messages 50000 --starts 2

Both brokers listen on 127.0.0.1 only and are stopped (by PID) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy.local.broker import LocalBroker  # noqa: E402
from deploy.local.kafka import LocalKafka  # noqa: E402
from deploy.local.kafka_jars import KAFKA_VERSION  # noqa: E402
from journeys.topics import ensure_topics  # noqa: E402


class TimedKafka(LocalKafka):
    """LocalKafka that remembers how long its storage format took."""

    format_s = 0.0

    def _format(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        started = time.monotonic()
        super()._format(*args, **kwargs)
        self.format_s = time.monotonic() - started


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (from /proc/PID/stat)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def starts(n: int) -> None:
    totals, formats, stops = [], [], []
    for _ in range(n):
        k = TimedKafka()
        t0 = time.monotonic()
        k.start()
        totals.append(time.monotonic() - t0)
        formats.append(k.format_s)
        t0 = time.monotonic()
        k.stop()
        stops.append(time.monotonic() - t0)
    print(f"Kafka {KAFKA_VERSION} start to ready (format + JVM start + registered), {n} runs: "
          f"{min(totals):.2f}–{max(totals):.2f} s (median {statistics.median(totals):.2f} s); "
          f"of which storage format {min(formats):.2f}–{max(formats):.2f} s; "
          f"stop (SIGTERM to exit) {min(stops):.2f}–{max(stops):.2f} s")


async def produce(bootstrap: str, topic: str, n: int, size: int) -> float:
    payload = b"x" * size
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    try:
        t0 = time.monotonic()
        pending = []
        for i in range(n):
            pending.append(await producer.send(topic, key=str(i % 1000).encode(), value=payload))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return time.monotonic() - t0
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, partitions: int, n: int) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=50, max_partition_fetch_bytes=4 * 2**20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got = 0
        t0 = time.monotonic()
        while got < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            got += sum(len(b) for b in batches.values())
            if time.monotonic() - t0 > 120:
                raise RuntimeError(f"consumed only {got} of {n} in 120 s")
        return time.monotonic() - t0
    finally:
        await consumer.stop()


def throughput(name: str, bootstrap: str, pid: int, n: int, size: int, partitions: int) -> None:
    topic = f"bench-{int(time.time())}"
    ensure_topics(bootstrap, [topic], partitions)
    cpu0 = cpu_s(pid)
    p = asyncio.run(produce(bootstrap, topic, n, size))
    cpu1 = cpu_s(pid)
    c = asyncio.run(consume(bootstrap, topic, partitions, n))
    cpu2 = cpu_s(pid)
    print(f"{name:<14} produce {n / p:>9,.0f} msg/s ({p:5.1f} s, broker CPU {cpu1 - cpu0:4.1f} s)   "
          f"consume {n / c:>9,.0f} msg/s ({c:5.1f} s, broker CPU {cpu2 - cpu1:4.1f} s)   "
          f"RSS after {rss_mib(pid):.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100, help="value bytes per message")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--starts", type=int, default=3, help="cold Kafka starts to time")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before RSS")
    args = parser.parse_args()

    starts(args.starts)
    print(f"throughput: aiokafka, {args.messages:,} messages x {args.size} B, acks=all, "
          f"{args.partitions} partitions, one producer then one consumer (assigned, no group)")
    with LocalKafka() as kafka:
        assert kafka.pid is not None
        time.sleep(args.idle)
        print(f"Kafka {KAFKA_VERSION} RSS at idle ({args.idle:.0f} s after ready): "
              f"{rss_mib(kafka.pid):.0f} MiB")
        throughput(f"Kafka {KAFKA_VERSION}", kafka.bootstrap_servers, kafka.pid,
                   args.messages, args.size, args.partitions)
    with LocalBroker() as tansu:
        assert tansu.pid is not None
        print(f"Tansu RSS at idle: {rss_mib(tansu.pid):.0f} MiB")
        throughput("Tansu", tansu.bootstrap_servers, tansu.pid,
                   args.messages, args.size, args.partitions)


if __name__ == "__main__":
    main()
