"""The stream worker end to end: real broker (Tansu), real ClickHouse server, worker as a
subprocess (`python -m stream`), configured only through JOURNEYS_* variables.

Progress is read from the worker's committed offsets, not from sleeps: the worker
commits a batch only after its warehouse write, so once every offset of the
by-customer topic is committed, the warehouse must already hold the exact result.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from deploy.local.broker import LocalBroker
from deploy.local.clickhouse import LocalClickHouse
from journeys.settings import KafkaConfig, WarehouseConfig
from journeys.topics import ensure_journey_topics
from stream.engine.session_state import session_id
from tests.integration.ingest_support import broker_worker_settings, read_topic
from tests.integration.stream_support import wait_pipeline
from warehouse.backend import Warehouse
from warehouse.connect import connect

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 3
GAP_MS = 30 * 60_000  # the packaged default definitions' sessions.gap
LATENESS_MS = 5 * 60_000  # WorkerSettings default
BASE_MS = 1_772_323_200_000  # 2026-03-01T00:00Z
MALFORMED = b'{"event_id": "broken-1", "type": "product_view", "channel": '


def make_events(seed: int = 7, customers: int = 40) -> list[dict[str, Any]]:
    """Customers with bursts separated by gaps below, at and above the session gap."""
    rnd = random.Random(seed)
    events: list[dict[str, Any]] = []
    for c in range(customers):
        known = c % 4 != 0
        t = BASE_MS + rnd.randrange(0, 3_600_000)
        for burst in range(rnd.randint(1, 5)):
            for _ in range(rnd.randint(1, 12)):
                t += rnd.choice((1_000, 20_000, 120_000, 600_000, GAP_MS - 1))
                events.append({
                    "event_id": f"ev-{c}-{len(events)}",
                    "type": rnd.choice(("product_view", "add_to_cart", "support_chat")),
                    "channel": rnd.choice(("web", "app", "email", "store")),
                    "occurred_at": t,
                    "customer_id": f"cust-{c}" if known else None,
                    "anonymous_id": None if known else f"anon-{c}",
                })
            t += rnd.choice((GAP_MS, GAP_MS + 1, 3 * GAP_MS)) if burst else GAP_MS
    return events


def arrival_order(events: list[dict[str, Any]], seed: int = 11) -> list[dict[str, Any]]:
    """Out of order but within the allowed lateness, with some duplicates."""
    rnd = random.Random(seed)
    dups = rnd.sample(events, len(events) // 10)
    keyed = [(e["occurred_at"] + rnd.randrange(LATENESS_MS // 2), i, e)
             for i, e in enumerate([*events, *dups])]
    return [e for _, _, e in sorted(keyed, key=lambda x: (x[0], x[1]))]


def reference_sessions(events: list[dict[str, Any]]) -> set[tuple[str, str, int, int, int]]:
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in {e["event_id"]: e for e in events}.values():
        by_customer[e["customer_id"] or e["anonymous_id"]].append(e)
    out: set[tuple[str, str, int, int, int]] = set()
    for cust, evs in by_customer.items():
        evs.sort(key=lambda e: (e["occurred_at"], e["event_id"]))
        runs: list[list[dict[str, Any]]] = []
        for e in evs:
            if runs and e["occurred_at"] - runs[-1][-1]["occurred_at"] < GAP_MS:
                runs[-1].append(e)
            else:
                runs.append([e])
        for run in runs:
            out.add((session_id(cust, run[0]["event_id"]), cust, run[0]["occurred_at"],
                     run[-1]["occurred_at"], len(run)))
    return out


def produce(kafka: KafkaConfig, events: list[dict[str, Any]], extra: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks=1, linger_ms=5)
    try:
        for e in events:
            key = (e["customer_id"] or e["anonymous_id"]).encode()
            producer.send(kafka.raw_topic, key=key, value=orjson.dumps(e))
        for raw in extra:
            producer.send(kafka.raw_topic, key=b"broken", value=raw)
        producer.flush(30)
    finally:
        producer.close()


def _committed(consumer: KafkaConsumer, topic: str) -> int:
    return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in range(PARTITIONS))


def wait_processed(kafka: KafkaConfig, group: str, produced: int, worker: subprocess.Popen,
                   log: Path, timeout: float = 120.0) -> None:
    """Until the validate stage has committed every raw record (each forwarded or
    dead-lettered by then) and every later stage every record of its topic (written by
    then). Raw offsets == counts on a fresh topic; internal topics may hold extra copies
    after a crash, so they are compared with their end offsets (stream_support)."""
    from stream.agents.validate import validate_group

    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers,
                             group_id=validate_group(group), enable_auto_commit=False)
    deadline = time.monotonic() + timeout
    try:
        done = 0
        while time.monotonic() < deadline:
            assert worker.poll() is None, f"worker exited:\n{log.read_text()[-4000:]}"
            done = _committed(consumer, kafka.raw_topic)
            if done >= produced:
                assert done == produced
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"{kafka.raw_topic}: committed {done}/{produced} after {timeout}s:\n"
                        f"{log.read_text()[-4000:]}")
    finally:
        consumer.close()
    wait_pipeline(kafka, group, [worker], log, timeout=max(deadline - time.monotonic(), 10))


def sessions_in(wh: Warehouse) -> set[tuple[str, str, int, int, int]]:
    rows = wh.query(f"SELECT session_id, customer_id, started_at_ms, ended_at_ms, events "
                    f"FROM {wh.database}.sessions FINAL WHERE deleted = 0")
    return {(r[0], r[1], int(r[2]), int(r[3]), int(r[4])) for r in rows}


def scalar(wh: Warehouse, sql: str) -> int:
    return int(wh.query(sql.format(db=wh.database))[0][0])


@pytest.fixture
def worker_env(broker: LocalBroker, clickhouse_server: LocalClickHouse,
               unique_name: Callable[[str], str], tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_")}
    env.update({
        **broker_worker_settings(),
        "JOURNEYS_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "JOURNEYS_KAFKA__TOPIC_PREFIX": unique_name("stream"),
        "JOURNEYS_KAFKA__PARTITIONS": str(PARTITIONS),
        "JOURNEYS_WAREHOUSE__BACKEND": "server",
        "JOURNEYS_WAREHOUSE__HOST": clickhouse_server.host,
        "JOURNEYS_WAREHOUSE__PORT": str(clickhouse_server.tcp_port),
        "JOURNEYS_WAREHOUSE__DATABASE": unique_name("stream"),
        "JOURNEYS_APP_ID": unique_name("worker"),
        "JOURNEYS_DATA_DIR": str(tmp_path / "data"),
        "JOURNEYS_FLUSH_INTERVAL_S": "0.3",
    })
    return env


@pytest.fixture
def worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream", "--loglevel", os.environ.get("STREAM_TEST_LOGLEVEL", "warning")],
                                cwd=ROOT, env=worker_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc, log
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)


def test_sessions_dead_letters_and_replay(worker_env: dict[str, str],
                                          worker: tuple[subprocess.Popen, Path]) -> None:
    proc, log = worker
    env = worker_env
    kafka = KafkaConfig(bootstrap_servers=env["JOURNEYS_KAFKA__BOOTSTRAP_SERVERS"],
                        topic_prefix=env["JOURNEYS_KAFKA__TOPIC_PREFIX"], partitions=PARTITIONS)
    ensure_journey_topics(kafka)  # before producing: unknown topics get 4 partitions
    events = make_events()
    order = arrival_order(events)
    expected = reference_sessions(events)
    assert 40 < len(expected) < len(events)

    produce(kafka, order, [MALFORMED])
    wait_processed(kafka, env["JOURNEYS_APP_ID"], len(order) + 1, proc, log)

    wh = connect(WarehouseConfig(backend="server", host=env["JOURNEYS_WAREHOUSE__HOST"],
                                 port=int(env["JOURNEYS_WAREHOUSE__PORT"]),
                                 database=env["JOURNEYS_WAREHOUSE__DATABASE"]),
                 create_database=False)
    try:
        # committed => written: no polling of the warehouse needed
        assert sessions_in(wh) == expected
        assert scalar(wh, "SELECT count() FROM {db}.touchpoints FINAL") == len(events)
        dead = wh.query(f"SELECT reason, original, stage FROM {wh.database}.dead_letters")
        assert [(r[0].split(":")[0], r[1], r[2]) for r in dead] == [
            ("invalid_json", MALFORMED.decode(), "validate")]

        letters = read_topic(kafka.bootstrap_servers, kafka.dead_letter_topic, expected=1)
        assert len(letters) == 1
        letter = orjson.loads(letters[0].value)
        assert letter["reason"].startswith("invalid_json")
        assert letter["original"].encode() == MALFORMED
        assert letter["stage"] == "validate"

        # Replay everything: every number stays the same.
        produce(kafka, order, [MALFORMED])
        wait_processed(kafka, env["JOURNEYS_APP_ID"], 2 * len(order) + 2, proc, log)
        assert sessions_in(wh) == expected
        assert scalar(wh, "SELECT count() FROM {db}.touchpoints FINAL") == len(events)
        assert scalar(wh, "SELECT uniqExact(original) FROM {db}.dead_letters") == 1
    finally:
        wh.close()


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "stream", "--loglevel", os.environ.get("STREAM_TEST_LOGLEVEL", "warning")],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_worker_killed_mid_stream_recovers_exactly(
    worker_env: dict[str, str], worker: tuple[subprocess.Popen, Path]
) -> None:
    """SIGKILL while a chunk is in flight, restart with the same group: the table state
    comes back from its changelog, uncommitted events are re-delivered, and the result
    is still exactly the reference."""
    proc, log = worker
    env = worker_env
    kafka = KafkaConfig(bootstrap_servers=env["JOURNEYS_KAFKA__BOOTSTRAP_SERVERS"],
                        topic_prefix=env["JOURNEYS_KAFKA__TOPIC_PREFIX"], partitions=PARTITIONS)
    ensure_journey_topics(kafka)
    events = make_events(seed=3, customers=60)
    order = arrival_order(events, seed=5)
    third = len(order) // 3
    chunks = [order[:third], order[third:2 * third], order[2 * third:]]
    group = env["JOURNEYS_APP_ID"]

    produce(kafka, chunks[0], [])
    wait_processed(kafka, group, len(chunks[0]), proc, log)
    produce(kafka, chunks[1], [])
    time.sleep(float(os.environ.get("KILL_AFTER", "0.5")))  # let the worker take some of it, then crash it
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)

    restarted = start_worker(env, log)
    try:
        produce(kafka, chunks[2], [])
        wait_processed(kafka, group, len(order), restarted, log, timeout=180)
        wh = connect(WarehouseConfig(backend="server", host=env["JOURNEYS_WAREHOUSE__HOST"],
                                     port=int(env["JOURNEYS_WAREHOUSE__PORT"]),
                                     database=env["JOURNEYS_WAREHOUSE__DATABASE"]),
                     create_database=False)
        try:
            got, want = sessions_in(wh), reference_sessions(events)
            assert got == want, f"missing {sorted(want - got)}, unexpected {sorted(got - want)}"
            assert scalar(wh, "SELECT count() FROM {db}.touchpoints FINAL") == len(events)
        finally:
            wh.close()
    finally:
        if restarted.poll() is None:
            os.kill(restarted.pid, signal.SIGTERM)
            try:
                restarted.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(restarted.pid, signal.SIGKILL)
                restarted.wait(10)
