"""Helpers for the ingest integration tests: topics per test, reading a topic back,
touchpoints with a known outcome, a stream worker subprocess, kcat."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from deploy.local.clickhouse import LocalClickHouse
from ingest.collector import create_collector_app
from journeys.events import parse_occurred_at
from journeys.settings import CollectorSettings, KafkaConfig, WarehouseConfig
from journeys.timeutil import ms_to_iso
from journeys.topics import ensure_journey_topics
from tests.reference.journeys_ref import Ev
from tests.reference.journeys_ref import sessions as ref_sessions
from warehouse.backend import Warehouse
from warehouse.connect import connect


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


# -- touchpoints with a known outcome -------------------------------------------------

GAP_MS = 30 * 60_000  # sessions.gap of the packaged definitions
CHANNELS = ("web", "app", "email", "store", "call_center", "chat", "ads")
TYPES = ("product_view", "add_to_cart", "cart", "shipping_details", "payment_details",
         "purchase", "support_chat", "email_open")


def journey_events(prefix: str, *, seed: int, customers: int, start_ms: int
                   ) -> list[dict[str, Any]]:
    """Wire events of `customers` people, in time order, on every channel, with gaps just
    below, at and above the session gap. Ids never link (each person is known or
    anonymous throughout), so the expected sessions do not depend on identity
    stitching; occurred_at alternates between ISO-8601 and epoch ms (both wire forms)."""
    rnd = random.Random(seed)
    events: list[dict[str, Any]] = []
    for c in range(customers):
        known = c % 3 != 0
        t = start_ms + rnd.randrange(0, 3_600_000)
        for _burst in range(rnd.randint(1, 4)):
            for _ in range(rnd.randint(1, 8)):
                t += rnd.choice((1_000, 45_000, 300_000, GAP_MS - 1))
                events.append({
                    "event_id": f"{prefix}-{c}-{len(events)}",
                    "type": rnd.choice(TYPES), "channel": rnd.choice(CHANNELS),
                    "occurred_at": t if len(events) % 2 else ms_to_iso(t),
                    "customer_id": f"{prefix}-cust-{c}" if known else None,
                    "anonymous_id": None if known else f"{prefix}-anon-{c}",
                    "properties": {"n": len(events)}, "context": {"test": prefix},
                })
            t += rnd.choice((GAP_MS, GAP_MS + 1, 5 * GAP_MS))
    return sorted(events, key=lambda e: (_ms(e), e["event_id"]))


def _ms(event: dict[str, Any]) -> int:
    value = event["occurred_at"]
    return value if isinstance(value, int) else parse_occurred_at(value)


def expected_sessions(events: Iterable[dict[str, Any]]) -> set[tuple[str, int, int, int]]:
    """(customer key, start, end, events) per session, by the reference semantics."""
    return set(ref_sessions(
        (Ev(e["event_id"], e["customer_id"] or e["anonymous_id"], e["type"], e["channel"],
            _ms(e)) for e in events), GAP_MS))


# -- a stream worker subprocess against the test broker and ClickHouse ----------------

def broker_worker_settings() -> dict[str, str]:
    """Worker settings the test broker needs: on Tansu (JOURNEYS_TEST_BROKER=tansu) no
    idempotent producer (it refuses InitProducerId); nothing on Apache Kafka."""
    if os.environ.get("JOURNEYS_TEST_BROKER", "kafka").strip().lower() == "tansu":
        return {"JOURNEYS_KAFKA__IDEMPOTENT_PRODUCER": "false"}
    return {}


ROOT = Path(__file__).resolve().parents[2]


class Worker:
    """`python -m stream` configured only by JOURNEYS_* variables, like production.

    Completion is read from the worker's committed offsets: it commits a batch only
    after its output is durable, so when every raw and by-customer record is
    committed the warehouse holds the final rows (no sleeping, no polling tables)."""

    def __init__(self, kafka: KafkaConfig, clickhouse: LocalClickHouse, database: str,
                 app_id: str, workdir: Path) -> None:
        self.kafka, self.app_id = kafka, app_id
        self.warehouse_config = WarehouseConfig(backend="server", host=clickhouse.host,
                                                port=clickhouse.tcp_port, database=database)
        self.log = workdir / "worker.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_")}
        self.env.update({
            **broker_worker_settings(),
            "JOURNEYS_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "JOURNEYS_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
            "JOURNEYS_KAFKA__PARTITIONS": str(kafka.partitions),
            "JOURNEYS_WAREHOUSE__BACKEND": "server",
            "JOURNEYS_WAREHOUSE__HOST": clickhouse.host,
            "JOURNEYS_WAREHOUSE__PORT": str(clickhouse.tcp_port),
            "JOURNEYS_WAREHOUSE__DATABASE": database,
            "JOURNEYS_APP_ID": app_id,
            "JOURNEYS_DATA_DIR": str(workdir / "worker-data"),
            "JOURNEYS_FLUSH_INTERVAL_S": "0.3",
        })
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        level = os.environ.get("STREAM_TEST_LOGLEVEL", "warning")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "stream", "--loglevel", level],
                                         cwd=ROOT, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT)
        return self

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_processed(self, timeout: float = 180.0) -> None:
        """Until the worker has committed every record of the raw topic (each forwarded
        or dead-lettered by then), then of each internal topic (stream.agents.app)."""
        from stream.agents.app import committed_stages  # stage topics and their groups

        deadline = time.monotonic() + timeout
        for topic, group in committed_stages(self.kafka, self.app_id):
            consumer = KafkaConsumer(bootstrap_servers=self.kafka.bootstrap_servers,
                                     group_id=group, enable_auto_commit=False)
            try:
                # Internal topics keep growing (idle watermark broadcasts): done means
                # everything that was there once the earlier stages were done.
                ends = end_offsets(self.kafka.bootstrap_servers, topic)
                done: dict[int, int] = {}
                while any(done.get(p, 0) < end for p, end in ends.items()):
                    assert self.proc is not None and self.proc.poll() is None, (
                        f"worker exited:\n{self._tail()}")
                    assert time.monotonic() < deadline, (
                        f"{topic}: committed {done} of {ends}:\n{self._tail()}")
                    time.sleep(0.3)
                    done = {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in ends}
            finally:
                consumer.close()

    def warehouse(self) -> Warehouse:
        return connect(self.warehouse_config, create_database=False)


def end_offsets(bootstrap_servers: str, topic: str) -> dict[int, int]:
    """Per partition, the high-water mark from a Fetch (Tansu's ListOffsets lags)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                             fetch_max_wait_ms=20, max_partition_fetch_bytes=1024)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)
                                                          or ())]
        assert parts, f"topic {topic} does not exist"
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            consumer.poll(timeout_ms=100, max_records=1)
            ends = {tp.partition: consumer.highwater(tp) for tp in parts}
            if all(e is not None for e in ends.values()):
                return {p: int(e or 0) for p, e in ends.items()}
        raise AssertionError(f"no high-water marks for {topic}")
    finally:
        consumer.close()


def warehouse_sessions(wh: Warehouse) -> set[tuple[str, int, int, int]]:
    rows = wh.query(f"SELECT customer_id, started_at_ms, ended_at_ms, events "
                    f"FROM {wh.database}.sessions FINAL WHERE deleted = 0")
    return {(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows}


def warehouse_event_ids(wh: Warehouse) -> list[str]:
    return [r[0] for r in wh.query(f"SELECT event_id FROM {wh.database}.touchpoints FINAL")]


# -- kcat -----------------------------------------------------------------------------

def kcat_env(tmp_path: Path) -> dict[str, str]:
    """Environment for kcat: a current librdkafka (from confluent-kafka) if installed.

    Debian bookworm's kcat 1.7.1 loads the system librdkafka 2.0.2, which cannot parse
    the embedded broker's (Tansu 0.6) ApiVersions v3 answer ("Read underflow"); against
    Apache Kafka the stock package works as it is."""
    kcat = shutil.which("kcat")
    assert kcat, "kcat is not installed: apt-get install -y kcat (scripts/test.sh does)"
    env = dict(os.environ)
    spec = importlib.util.find_spec("confluent_kafka")
    assert spec is not None and spec.origin, (
        "confluent-kafka is needed for its librdkafka: Debian's 2.0.2 cannot talk to the "
        "embedded broker (see docs/ingest.md)")
    libs = sorted((Path(spec.origin).parent.parent / "confluent_kafka.libs")
                  .glob("librdkafka*.so*"))
    assert libs, "confluent-kafka wheel without a bundled librdkafka"
    shim = tmp_path / "librdkafka"
    shim.mkdir(exist_ok=True)
    link = shim / "librdkafka.so.1"
    if not link.exists():
        link.symlink_to(libs[0])
    env["LD_LIBRARY_PATH"] = f"{shim}:{env.get('LD_LIBRARY_PATH', '')}".rstrip(":")
    return env


def kcat_produce(kafka: KafkaConfig, lines: list[bytes], tmp_path: Path) -> None:
    """The docs/ingest.md recipe: `key|json` per line, murmur2 like the Java and
    kafka-python clients, acks=all, idempotent, gzip."""
    proc = subprocess.run(
        ["kcat", "-P", "-b", kafka.bootstrap_servers, "-t", kafka.raw_topic, "-K", "|",
         "-X", "partitioner=murmur2_random", "-X", "acks=all",
         "-X", "enable.idempotence=true", "-z", "gzip"],
        input=b"\n".join(lines) + b"\n", env=kcat_env(tmp_path), capture_output=True,
        timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()


def kcat_line(event: dict[str, Any]) -> bytes:
    return (event.get("customer_id") or event["anonymous_id"]).encode() + b"|" + orjson.dumps(
        event)


# -- the collector behind a real HTTP server ------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_collector(settings: CollectorSettings) -> Iterator[str]:
    """The collector app behind uvicorn on 127.0.0.1:settings.port; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(create_collector_app(settings), host="127.0.0.1",
                                           port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "collector did not start"
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(10)
