"""Helpers for stream worker tests: workers as subprocesses, completion from committed
offsets, and reading journeys back from the warehouse.

Completion: each stage commits a batch only after its outputs are durable, so once
every stage's group (stream.agents.app.committed_stages) has committed the end offsets of its
topic, checked twice in a row with fresh end offsets (the customer stage can produce
handovers into its own topic), the warehouse holds the final rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from journeys.settings import KafkaConfig
from stream.agents.app import committed_stages
from stream.agents.stats import late_in_stats_line
from stream.stages.envelopes import partition_for
from tests.integration.ingest_support import end_offsets
from warehouse.backend import Warehouse

ROOT = Path(__file__).resolve().parents[2]


def worker_env(kafka: KafkaConfig, clickhouse_host: str, clickhouse_port: int, database: str,
               app_id: str, **settings: str) -> dict[str, str]:
    """Environment of a `python -m stream` worker on the test's broker and ClickHouse
    server: this process's environment without JOURNEYS_* plus these settings
    (`settings` keys are JOURNEYS_ names without the prefix, e.g. ALLOWED_LATENESS_MS)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_")}
    env.update({
        "JOURNEYS_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "JOURNEYS_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
        "JOURNEYS_KAFKA__PARTITIONS": str(kafka.partitions),
        "JOURNEYS_WAREHOUSE__BACKEND": "server",
        "JOURNEYS_WAREHOUSE__HOST": clickhouse_host,
        "JOURNEYS_WAREHOUSE__PORT": str(clickhouse_port),
        "JOURNEYS_WAREHOUSE__DATABASE": database,
        "JOURNEYS_APP_ID": app_id,
        **{f"JOURNEYS_{k}": v for k, v in settings.items()},
    })
    return env


def start_worker(env: dict[str, str], log: Path, loglevel: str | None = None) -> subprocess.Popen:
    level = loglevel or os.environ.get("STREAM_TEST_LOGLEVEL", "warning")
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "stream", "--loglevel", level],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _committed(consumer: KafkaConsumer, topic: str, parts: Sequence[int]) -> dict[int, int]:
    return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in parts}


def pipeline_done(kafka: KafkaConfig, app_id: str) -> tuple[bool, str]:
    """One pass over the stages: (all committed to their ends, progress text)."""
    progress = []
    for topic, group in committed_stages(kafka, app_id):
        ends = end_offsets(kafka.bootstrap_servers, topic)
        consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=group,
                                 enable_auto_commit=False)
        try:
            done = _committed(consumer, topic, list(ends))
        finally:
            consumer.close()
        progress.append(f"{topic}: {sum(done.values())}/{sum(ends.values())}")
        if done != ends:
            return False, "; ".join(progress)
    return True, "; ".join(progress)


def wait_pipeline(kafka: KafkaConfig, app_id: str, workers: Sequence[subprocess.Popen],
                  log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    streak, text = 0, ""
    while streak < 2:
        for w in workers:
            assert w.poll() is None, f"worker exited:\n{log.read_text()[-4000:]}"
        if time.monotonic() > deadline:
            pytest.fail(f"not processed after {timeout}s ({text}):\n{log.read_text()[-4000:]}")
        done, text = pipeline_done(kafka, app_id)
        streak = streak + 1 if done else 0
        time.sleep(0.3)


JOURNEY_COLUMNS = ("instance_id", "journey", "customer_id", "status", "opened_at_ms",
                   "closed_at_ms", "furthest_step", "path_types", "path_channels",
                   "path_times", "detour_kinds", "detour_steps", "detour_channels",
                   "detour_times")


def journeys_in(wh: Warehouse) -> dict[str, tuple[Any, ...]]:
    """instance id -> row (JOURNEY_COLUMNS) of every live instance, latest version."""
    rows = wh.query(f"SELECT {', '.join(JOURNEY_COLUMNS)} FROM {wh.database}.journey_instances"
                    " FINAL WHERE deleted = 0")
    return {r[0]: tuple(r) for r in rows}


def row_view(r: tuple[Any, ...]) -> tuple[Any, ...]:
    """A warehouse row (stream_support.JOURNEY_COLUMNS) as stitching_ref.reference_view."""
    (_iid, journey, customer, status, opened, closed, furthest, types, chans, times,
     kinds, steps, dchans, dtimes) = r
    return (journey, customer, status, int(opened), int(closed), int(furthest),
            [int(t) for t in times], list(types), list(chans),
            [(k, s, c, int(t)) for k, s, c, t in zip(kinds, steps, dchans, dtimes,
                                                     strict=True)])


def fillers(after_ms: int, partitions: int) -> list[dict[str, Any]]:
    """One event per partition of a filler customer, far in the future: every
    partition's watermark passes every real deadline."""
    out, k = [], 0
    covered: set[int] = set()
    while len(covered) < partitions:
        key = f"filler-{k}"
        p = partition_for(key, partitions)
        if p not in covered:
            covered.add(p)
            out.append({"event_id": f"fill-{k}", "type": "page_view", "channel": "web",
                        "occurred_at": after_ms, "customer_id": key, "anonymous_id": None})
        k += 1
    return out


def produce(kafka: KafkaConfig, events: list[dict[str, Any]]) -> None:
    """Keyed by customer, else device: a customer's events in one raw partition, in order."""
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks=1, linger_ms=5)
    try:
        for e in events:
            key = (e["customer_id"] or e["anonymous_id"] or "x").encode()
            producer.send(kafka.raw_topic, key=key, value=orjson.dumps(e))
        producer.flush(30)
    finally:
        producer.close()


def late_events(log: Path) -> int:
    """The last `late=` of a worker's stats lines (needs loglevel info): events behind
    a by-customer partition's watermark, applied to nothing but the raw table."""
    late = 0
    for line in log.read_text(errors="replace").splitlines():
        n = late_in_stats_line(line)
        late = late if n is None else n
    return late
