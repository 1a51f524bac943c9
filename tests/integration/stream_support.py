"""Helpers for stream worker tests: workers as subprocesses, completion from committed
offsets, and reading journeys back from the warehouse.

Completion: each stage commits a batch only after its outputs are durable. Stages keep
sending watermark claims, so the internal topics' ends keep moving; what was produced
before some moment is processed once, stage by stage in processing order
(stream.agents.app.committed_stages), each group has committed the end offsets its
topic had when the stage before it got there. The handovers topic is checked twice (the
customer stage reads it and could write to it again while absorbing).
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

from journeys import envvars
from journeys.settings import KafkaConfig
from stream.agents.app import committed_stages
from stream.agents.stats import late_in_stats_line
from tests.integration.ingest_support import broker_worker_settings, end_offsets
from warehouse.backend import Warehouse

ROOT = Path(__file__).resolve().parents[2]


def state_store_setting() -> dict[str, str]:
    """`JOURNEYS_STATE_STORE` of this process, passed on to the workers (the one
    JOURNEYS_ variable that does: run the suite with either store); a test's own
    STATE_STORE setting wins."""
    store = os.environ.get(envvars.WORKER_STATE_STORE)
    return {envvars.WORKER_STATE_STORE: store} if store else {}


def worker_env(kafka: KafkaConfig, clickhouse_host: str, clickhouse_port: int, database: str,
               app_id: str, **settings: str) -> dict[str, str]:
    """Environment of a `python -m stream` worker on the test's broker and ClickHouse
    server: this process's environment without JOURNEYS_* plus these settings
    (`settings` keys are JOURNEYS_ names without the prefix, e.g. ALLOWED_LATENESS_MS)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_")}
    env.update({
        **broker_worker_settings(),
        **state_store_setting(),
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


def _committed(kafka: KafkaConfig, group: str, topic: str, parts: Sequence[int]) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=group,
                             enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in parts}
    finally:
        consumer.close()


def wait_pipeline(kafka: KafkaConfig, app_id: str, workers: Sequence[subprocess.Popen],
                  log: Path, timeout: float = 180.0) -> None:
    """Return once everything produced so far is processed by every stage (see the
    module docstring); fail on a worker exit or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    for topic, group in committed_stages(kafka, app_id):
        for _round in range(2 if topic == kafka.handovers_topic else 1):
            ends = end_offsets(kafka.bootstrap_servers, topic)
            while True:
                for w in workers:
                    assert w.poll() is None, f"worker exited:\n{log.read_text()[-4000:]}"
                done = _committed(kafka, group, topic, list(ends))
                if all(done[p] >= e for p, e in ends.items()):
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"not processed after {timeout}s: {topic} committed "
                                f"{sum(done.values())}/{sum(ends.values())}:\n"
                                f"{log.read_text()[-4000:]}")
                time.sleep(0.3)


JOURNEY_COLUMNS = ("instance_id", "journey", "customer_id", "status", "opened_at_ms",
                   "closed_at_ms", "furthest_step", "path_types", "path_channels",
                   "path_times", "detour_kinds", "detour_steps", "detour_channels",
                   "detour_times", "journey_value", "has_journey_value")


def journeys_in(wh: Warehouse) -> dict[str, tuple[Any, ...]]:
    """instance id -> row (JOURNEY_COLUMNS) of every live instance, latest version."""
    rows = wh.query(f"SELECT {', '.join(JOURNEY_COLUMNS)} FROM {wh.database}.journey_instances"
                    " FINAL WHERE deleted = 0")
    return {r[0]: tuple(r) for r in rows}


def sessions_in(wh: Warehouse) -> set[tuple[str, int, int, int]]:
    """Live sessions (customer, started, ended, events), filler customers left out: the
    shape tests/reference/stitching_ref.split gives."""
    rows = wh.query(f"SELECT customer_id, started_at_ms, ended_at_ms, events "
                    f"FROM {wh.database}.sessions FINAL WHERE deleted = 0 "
                    f"AND customer_id NOT LIKE 'filler-%%'")
    return {(str(c), int(s), int(e), int(n)) for c, s, e, n in rows}


def row_view(r: tuple[Any, ...]) -> tuple[Any, ...]:
    """A warehouse row (stream_support.JOURNEY_COLUMNS) as stitching_ref.reference_view."""
    (_iid, journey, customer, status, opened, closed, furthest, types, chans, times,
     kinds, steps, dchans, dtimes, value, has_value) = r
    return (journey, customer, status, int(opened), int(closed), int(furthest),
            [int(t) for t in times], list(types), list(chans),
            [(k, s, c, int(t)) for k, s, c, t in zip(kinds, steps, dchans, dtimes,
                                                     strict=True)],
            float(value) if int(has_value) else None)


def produce_fillers(kafka: KafkaConfig, at_ms: int) -> None:
    """One event of a filler customer far in the future on every raw partition: every
    source partition's watermark passes every real deadline (customers `filler-<p>`)."""
    parts = len(end_offsets(kafka.bootstrap_servers, kafka.raw_topic))
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    try:
        for p in range(parts):
            producer.send(kafka.raw_topic, partition=p, value=orjson.dumps({
                "event_id": f"fill-{p}-{at_ms}", "type": "page_view", "channel": "web",
                "occurred_at": at_ms, "customer_id": f"filler-{p}", "anonymous_id": None}))
        producer.flush(30)
    finally:
        producer.close()


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
    """The last `late=` of a worker's stats lines (needs loglevel info): events older
    than their source partition's watermark, applied to nothing but the raw table."""
    late = 0
    for line in log.read_text(errors="replace").splitlines():
        n = late_in_stats_line(line)
        late = late if n is None else n
    return late


def demo_day(start_ms: int, seed: int = 7) -> list[dict[str, Any]]:
    """A day of the demo's generated multi-channel traffic (its checkout loop, payment
    incident and call-centre switch), occurred_at as epoch ms."""
    from ingest.generator import DEMO_VISITORS_PER_HOUR, GeneratorConfig, generate_events
    from ingest.stories import demo_stories
    from journeys.events import parse_occurred_at

    day = 86_400_000
    cfg = GeneratorConfig(seed=seed, start_ms=start_ms, duration_ms=day,
                          visitors_per_hour=DEMO_VISITORS_PER_HOUR,
                          stories=demo_stories(day, start_ms))
    return [{**e, "occurred_at": parse_occurred_at(e["occurred_at"])}
            for e in generate_events(cfg)]
