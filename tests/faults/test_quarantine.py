"""A raw record that kills the worker process outright (fault injection: the process
exits at once, as a native crash or the OOM killer would end it) is quarantined after
it killed the worker twice while handled alone: dead-lettered with reason
`quarantined`, never read again; its neighbours are processed
(docs/reliability.md "Quarantine")."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from journeys.settings import KafkaConfig, WarehouseConfig
from journeys.timeutil import now_ms
from journeys.topics import ensure_journey_topics
from stream.agents.crash_journal import FAULT_EXIT_CODE
from tests.faults.corpus import valid
from tests.faults.report import FaultFigures
from tests.integration.stream_support import start_worker, stop_worker, wait_pipeline, worker_env
from warehouse.connect import connect

# Kafka only in scripts/test.sh (CI budget): the crash journal and the quarantine are
# the worker's, not the broker's; the poison tests run on both brokers.
pytestmark = pytest.mark.kafka_only


def _produce(kafka: KafkaConfig, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    try:
        for value in values:
            producer.send(kafka.raw_topic, key=b"k", value=value)
        producer.flush(30)
    finally:
        producer.close()


def test_a_record_that_kills_the_worker_is_quarantined(
        broker: Any, clickhouse_server: Any, unique_name: Callable[[str], str],
        tmp_path: Path, fault_figures: FaultFigures) -> None:
    prefix = unique_name("qz")
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix,
                        partitions=1)
    ensure_journey_topics(kafka)
    good = valid(prefix, 40, now_ms() - 4 * 3_600_000)
    needle = f"{prefix}-killer"
    killer = orjson.dumps({"event_id": needle, "type": "product_view", "channel": "web",
                           "occurred_at": now_ms() - 3 * 3_600_000,
                           "customer_id": f"{prefix}-cust"})
    _produce(kafka, [*good[:20], killer, *good[20:]])
    database, app_id = unique_name("qzdb"), unique_name("qzw")
    env = worker_env(kafka, clickhouse_server.host, clickhouse_server.tcp_port, database,
                     app_id, DATA_DIR=str(tmp_path / "data"),
                     FAULT_EXIT_ON=f"validate:{needle}")
    log = tmp_path / "worker.log"
    codes = []
    for _ in range(3):  # dies in a batch, then twice handling the killer alone
        proc = start_worker(env, log)
        try:
            codes.append(proc.wait(120))
        except subprocess.TimeoutExpired:
            stop_worker(proc)
            raise AssertionError(f"worker did not die: {log.read_text()[-3000:]}") from None
    assert codes == [FAULT_EXIT_CODE] * 3, log.read_text()[-3000:]
    proc = start_worker(env, log)
    started = time.monotonic()
    try:
        wait_pipeline(kafka, app_id, [proc], log)
        recovery = time.monotonic() - started
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        stop_worker(proc)
    text = log.read_text(errors="replace")
    assert "killed the worker 2 times while handled alone: quarantined" in text, text[-3000:]
    wh = connect(WarehouseConfig(backend="server", host=clickhouse_server.host,
                                 port=clickhouse_server.tcp_port, database=database),
                 create_database=False)
    try:
        letters = wh.query(f"SELECT reason, stage, original FROM {database}.dead_letters")
        ids = {r[0] for r in wh.query(f"SELECT event_id FROM {database}.touchpoints")}
        sessions = wh.query(f"SELECT sum(events) FROM {database}.sessions FINAL "
                            "WHERE deleted = 0")
    finally:
        wh.close()
    want = {orjson.loads(v)["event_id"] for v in good}
    fault_figures("raw record that kills the worker (quarantined)", acknowledged=len(good),
                  lost=len(want - ids), doubled=max(0, int(sessions[0][0]) - len(good)),
                  recovery_s=recovery, note=f"{len(letters)} dead letter(s), "
                  f"{len(codes)} deaths; recovery = 4th start to caught up")
    assert [(r[0], r[1]) for r in letters] == [
        (f"quarantined: killed the worker 2 times at {kafka.raw_topic}[0]@20", "validate")]
    assert orjson.loads(letters[0][2])["event_id"] == needle
    assert ids == want  # every neighbour, once
    assert sessions[0][0] == len(good)
