"""Stream throughput end to end: events/s from the raw topic into ClickHouse.

Starts its own embedded broker and a local ClickHouse server (127.0.0.1, stopped at the
end), pre-produces N generated multi-channel touchpoints (the demo generator: customers,
anonymous visitors who identify, both journeys) to the raw topic, then starts W stream
workers (`python -m stream`, one consumer group) and times them from start until every
stage has committed its topic's end offsets, i.e. until raw touchpoints, sessions and
journey instances are all written (each stage commits only after its writes). Prints
events/s, the stages' counts, the rows in ClickHouse and the workers' CPU time.

    .venv/bin/python bench/bench_stream.py                       # 200k events, 2 workers
    .venv/bin/python bench/bench_stream.py --events 50000 --workers 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy.local.broker import LocalBroker  # noqa: E402
from deploy.local.clickhouse import LocalClickHouse  # noqa: E402
from ingest.generator import GeneratorConfig, generate_events  # noqa: E402
from journeys.settings import KafkaConfig, WarehouseConfig  # noqa: E402
from journeys.topics import ensure_journey_topics  # noqa: E402
from stream.agents.app import committed_stages  # noqa: E402
from stream.agents.stats import late_in_stats_line  # noqa: E402
from warehouse.connect import connect  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def events(n: int, seed: int) -> list[bytes]:
    """n generated events (JSON) over as many days as the volume needs."""
    per_hour = 20_000.0
    config = GeneratorConfig(seed=seed, duration_ms=30 * 86_400_000,
                             visitors_per_hour=per_hour, max_events=n, id_prefix="b")
    return [orjson.dumps(e) for e in generate_events(config)]


async def produce(kafka: KafkaConfig, payloads: list[bytes]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks=1,
                                linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    started = time.perf_counter()
    try:
        futures = []
        for i, value in enumerate(payloads):
            futures.append(await producer.send(kafka.raw_topic, value, key=str(i % 997).encode()))
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """High-water marks from a Fetch. Tansu's ListOffsets(LATEST) answers the start of
    the last batch + 1, which is still inside the log: fetching there is cheap and the
    Fetch response carries the true high-water mark."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_wait_ms=20, max_partition_fetch_bytes=4 << 20)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        for tp in tps:
            consumer.seek(tp, max(consumer.position(tp) - 1, 0))
        for _ in range(100):
            consumer.poll(timeout_ms=100)
            ends = {tp.partition: consumer.highwater(tp) for tp in tps}
            if all(v is not None for v in ends.values()):
                return {p: int(v or 0) for p, v in ends.items()}
        raise RuntimeError(f"no high-water marks for {topic}")
    finally:
        consumer.close()


def progress(kafka: KafkaConfig, app_id: str) -> list[tuple[str, int, int]]:
    """(topic, committed, end) per stage."""
    out = []
    for topic, group in committed_stages(kafka, app_id):
        ends = end_offsets(kafka.bootstrap_servers, topic, kafka.partitions)
        consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=group,
                                 enable_auto_commit=False)
        try:
            done = sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in ends)
        finally:
            consumer.close()
        out.append((topic, done, sum(ends.values())))
    return out


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except OSError:
        return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--flush-interval", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args()

    print(f"generating {args.events:,} events …", flush=True)
    payloads = events(args.events, args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench_stream_"))
    with LocalBroker() as broker, LocalClickHouse() as ch:
        kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers, topic_prefix="bench",
                            partitions=args.partitions)
        ensure_journey_topics(kafka)
        secs = asyncio.run(produce(kafka, payloads))
        print(f"produced {len(payloads):,} events to {kafka.raw_topic} in {secs:.1f} s "
              f"({args.partitions} partitions)", flush=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_")}
        env.update({
            "JOURNEYS_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "JOURNEYS_KAFKA__TOPIC_PREFIX": "bench",
            "JOURNEYS_KAFKA__PARTITIONS": str(args.partitions),
            "JOURNEYS_WAREHOUSE__BACKEND": "server",
            "JOURNEYS_WAREHOUSE__HOST": ch.host,
            "JOURNEYS_WAREHOUSE__PORT": str(ch.tcp_port),
            "JOURNEYS_WAREHOUSE__DATABASE": "bench",
            "JOURNEYS_APP_ID": "bench-worker",
            "JOURNEYS_FLUSH_INTERVAL_S": str(args.flush_interval),
        })
        log = (work / "workers.log").open("wb")
        started = time.perf_counter()
        profile = os.environ.get("BENCH_PROFILE")  # a directory: cProfile each worker
        cmd = [sys.executable, "-m", "stream", "--loglevel", "info"]  # stats lines: late=
        procs = [subprocess.Popen(cmd if not profile else [
                     sys.executable, "-m", "cProfile", "-o", f"{profile}/worker{i}.prof",
                     "-m", "stream", "--loglevel", "info"],
                                  cwd=ROOT, env={**env, "JOURNEYS_DATA_DIR": str(work / f"w{i}")},
                                  stdout=log, stderr=subprocess.STDOUT)
                 for i in range(args.workers)]
        try:
            first = None
            while True:
                time.sleep(1.0)
                for p in procs:
                    if p.poll() is not None:
                        raise SystemExit(f"a worker exited; see {work / 'workers.log'}")
                stages = progress(kafka, "bench-worker")
                now = time.perf_counter() - started
                if first is None and stages[0][1] > 0:
                    first = now
                text = "  ".join(f"{t.split('.')[-1]} {d:,}/{e:,}" for t, d, e in stages)
                print(f"  {now:6.1f} s  {text}", flush=True)
                if stages[0][1] >= len(payloads) and all(d == e for _, d, e in stages):
                    break
                if now > args.timeout:
                    raise SystemExit("timed out")
            total = time.perf_counter() - started
            cpu = sum(cpu_seconds(p.pid) for p in procs)
        finally:
            for p in procs:
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
        wh = connect(WarehouseConfig(backend="server", host=ch.host, port=ch.tcp_port,
                                     database="bench"), create_database=False)
        try:
            counts = {t: int(wh.query(f"SELECT count() FROM bench.{t} FINAL{w}")[0][0])
                      for t, w in (("touchpoints", ""), ("sessions", " WHERE deleted = 0"),
                                   ("journey_instances", " WHERE deleted = 0"))}
            closed = int(wh.query("SELECT countIf(status != 'open') FROM bench.journey_instances"
                                  " FINAL WHERE deleted = 0")[0][0])
        finally:
            wh.close()
    late = late_events(work / "workers.log", [p.pid for p in procs])
    steady = total - (first or 0.0)
    print(f"\n{len(payloads):,} events, {args.workers} worker(s), {args.partitions} partitions, "
          f"ClickHouse server {counts}; {closed:,} journeys closed")
    print(f"  end to end: {total:.1f} s from worker start = {len(payloads) / total:,.0f} events/s;"
          f" from the first commit: {steady:.1f} s = {len(payloads) / steady:,.0f} events/s")
    print(f"  worker CPU: {cpu:.1f} s = {cpu * 1e6 / len(payloads):,.0f} us per event "
          f"({len(payloads) / cpu:,.0f} events per CPU-second)")
    print(f"  late events (behind a by-customer partition's watermark, kept only in the raw "
          f"table): {late:,}")


def late_events(log: Path, pids: list[int]) -> int:
    """Sum over workers of the last `late=` of their stats lines (cumulative counters)."""
    last: dict[int, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        n = late_in_stats_line(line)
        if n is not None:
            last[next((p for p in pids if f"[{p}]" in line), -1)] = n
    return sum(last.values())


if __name__ == "__main__":
    main()
