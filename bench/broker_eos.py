"""What Faust's `processing_guarantee="exactly_once"` does for this product on Apache Kafka.

Starts Apache Kafka and a ClickHouse server, runs one stream worker with
JOURNEYS_KAFKA__PROCESSING_GUARANTEE=exactly_once on N generated events (a second run
SIGKILLs the worker half-way and starts a new one), and prints, per topic the worker
writes, whether its records were written in Kafka transactions (a transaction's commit
marker takes an offset, so a topic written transactionally has fewer records than
offsets), what Faust's log says about its transactional producers, and
sessions/instances against the reference.

    .venv/bin/python bench/broker_eos.py                 # 20k events, ~1 min
    .venv/bin/python bench/broker_eos.py --kill          # SIGKILL half-way, restart

Nothing is asserted: the reading goes into docs/local-services.md "Exactly-once
transactions".
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
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_stream import (  # noqa: E402
    LATENESS_MS,
    ensure_topics,
    events,
    fillers,
    produce,
    references,
    results,
    wait_done,
)

from deploy.local.clickhouse import LocalClickHouse  # noqa: E402
from deploy.local.kafka import LocalKafka  # noqa: E402
from journeys.events import parse_occurred_at  # noqa: E402
from journeys.settings import KafkaConfig  # noqa: E402

APP_ID = "eos-worker"


def all_topics(bootstrap: str) -> set[str]:
    """Every topic, the broker's internal ones too (__transaction_state, ...)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, exclude_internal_topics=False)
    try:
        return set(consumer.topics())
    finally:
        consumer.close()


def records_vs_offsets(bootstrap: str, topic: str, partitions: int) -> tuple[int, int]:
    """(records a read_uncommitted consumer gets, offsets the partitions span): offsets
    beyond the records are transaction markers (or aborted records)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             isolation_level="read_uncommitted", fetch_max_wait_ms=50)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        spanned = sum(ends[tp] - starts[tp] for tp in tps)
        got, idle = 0, time.monotonic()
        while time.monotonic() - idle < 3:
            batch = consumer.poll(timeout_ms=300, max_records=10_000)
            n = sum(len(v) for v in batch.values())
            if n:
                got, idle = got + n, time.monotonic()
            if all(consumer.position(tp) >= ends[tp] for tp in tps):
                break
        return got, spanned
    finally:
        consumer.close()


def committed_summary(kafka: KafkaConfig) -> str:
    from bench_stream import committed

    from stream.agents.app import committed_stages
    parts = []
    for topic, group in committed_stages(kafka, APP_ID)[:3]:
        done = committed(kafka.bootstrap_servers, group, topic, list(range(4)))
        parts.append(f"{topic.split('.')[-1]} {sum(done.values()):,}")
    return ", ".join(parts)


def start(env: dict[str, str], log: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stream", "--loglevel", "info"], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--kill", action="store_true", help="SIGKILL the worker mid-way")
    ap.add_argument("--kill-after", type=float, default=9.0, help="seconds after its start")
    args = ap.parse_args()
    evs = events(args.events, 5)
    end = max(parse_occurred_at(e["occurred_at"]) for e in evs) + 3 * 86_400_000
    work = Path(tempfile.mkdtemp(prefix="broker_eos_"))
    with LocalKafka() as k, LocalClickHouse() as ch:
        kafka = KafkaConfig(bootstrap_servers=k.bootstrap_servers, topic_prefix="eos",
                            partitions=4)
        ensure_topics(kafka)
        asyncio.run(produce(kafka, [orjson.dumps(e) for e in evs], fillers(end, 4)))
        env = {key: v for key, v in os.environ.items() if not key.startswith("JOURNEYS_")}
        env.update({"JOURNEYS_KAFKA__BOOTSTRAP_SERVERS": k.bootstrap_servers,
                    "JOURNEYS_KAFKA__TOPIC_PREFIX": "eos", "JOURNEYS_KAFKA__PARTITIONS": "4",
                    "JOURNEYS_KAFKA__PROCESSING_GUARANTEE": "exactly_once",
                    "JOURNEYS_WAREHOUSE__BACKEND": "server",
                    "JOURNEYS_WAREHOUSE__HOST": ch.host,
                    "JOURNEYS_WAREHOUSE__PORT": str(ch.tcp_port),
                    "JOURNEYS_WAREHOUSE__DATABASE": "eos", "JOURNEYS_APP_ID": APP_ID,
                    "JOURNEYS_ALLOWED_LATENESS_MS": str(LATENESS_MS),
                    "JOURNEYS_SOURCE_IDLE_MS": str(86_400_000),
                    "JOURNEYS_DATA_DIR": str(work / "w")})
        log_path = work / "worker.log"
        log = log_path.open("wb")
        started = time.perf_counter()
        proc = start(env, log)
        if args.kill:
            time.sleep(args.kill_after)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            print(f"SIGKILLed the worker after {time.perf_counter() - started:.0f} s; "
                  "starting another", flush=True)
            proc = start(env, log)
        try:
            if args.kill:  # what the first worker had committed when it was killed
                print(f"  committed before the kill: {committed_summary(kafka)}", flush=True)
            wait_done(kafka, APP_ID, [proc], started, 900, log_path)
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(30)
        print(f"\nprocessed in {time.perf_counter() - started:.1f} s "
              f"({args.events:,} events, 1 worker, exactly_once)")
        every = all_topics(k.bootstrap_servers)
        written = sorted(t for t in every if t.startswith("eos.") or t.endswith("-changelog"))
        for topic in written:
            got, spanned = records_vs_offsets(k.bootstrap_servers, topic, 4)
            print(f"  {topic:40s} records {got:>8,} offsets {spanned:>8,} "
                  f"-> {'transactional' if spanned > got else 'no transaction markers'}")
        text = log_path.read_text(errors="replace")
        for line in text.splitlines():  # what Faust says it set up
            if "transactional producers" in line or "Fenced" in line or "Epoch" in line:
                print("  worker log:", line.split("]: ", 1)[-1].strip()[:160])
        sessions, instances, _touchpoints = results(ch, "eos")
    want_sessions, want_instances = references(evs, end - LATENESS_MS)[
        "split at the link (the product's semantics)"]
    same = sum(1 for i, s in want_instances.items() if instances.get(i) == s)
    print(f"  sessions {len(sessions & want_sessions):,} identical of {len(want_sessions):,} "
          f"(got {len(sessions):,}); instances {same:,} identical of {len(want_instances):,} "
          f"(got {len(instances):,})")
    print(f"  worker log: {log_path}")


if __name__ == "__main__":
    main()
