"""The poison corpus straight onto the raw topic, between valid events, through a real
worker (Apache Kafka, or Tansu with JOURNEYS_TEST_BROKER=tansu) into a ClickHouse
server: every bad record is dead-lettered with its reason, every valid neighbour is
processed, and the worker never stops (docs/stream.md "Poison records")."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from journeys.settings import KafkaConfig, WarehouseConfig
from journeys.timeutil import now_ms
from journeys.topics import ensure_journey_topics
from tests.faults.corpus import poison, valid
from tests.faults.report import FaultFigures
from tests.integration.stream_support import start_worker, stop_worker, wait_pipeline, worker_env
from warehouse.connect import connect


def _produce(kafka: KafkaConfig, values: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all",
                             max_request_size=4 * 1024 * 1024)
    try:
        for key, value in values:
            producer.send(kafka.raw_topic, key=key, value=value)
        producer.flush(30)
    finally:
        producer.close()


def test_poison_on_the_raw_topic_is_dead_lettered_and_neighbours_go_on(
        broker: Any, clickhouse_server: Any, unique_name: Callable[[str], str],
        tmp_path: Path, fault_figures: FaultFigures) -> None:
    prefix = unique_name("pz")
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix,
                        partitions=2)
    ensure_journey_topics(kafka)
    bad = poison(prefix)
    good = valid(prefix, len(bad), now_ms() - 4 * 3_600_000)
    values: list[tuple[bytes | None, bytes]] = []
    for i, (ok, (_label, raw, _code)) in enumerate(zip(good, bad, strict=True)):
        values.append((f"{prefix}-cust".encode(), ok))
        values.append((f"k{i}".encode() if i % 2 else None, raw))
    # the same event id again with other content: a conflicting duplicate, one copy
    # dead-lettered whichever ranks first (docs/semantics.md "Ordering and duplicates")
    conflicting = {**orjson.loads(good[-1]), "type": "add_to_cart"}
    values.append((f"{prefix}-cust".encode(), orjson.dumps(conflicting)))
    database, app_id = unique_name("pzdb"), unique_name("pzw")
    log = tmp_path / "worker.log"
    proc = start_worker(worker_env(kafka, clickhouse_server.host, clickhouse_server.tcp_port,
                                   database, app_id), log)
    try:
        _produce(kafka, values)
        wait_pipeline(kafka, app_id, [proc], log)
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        stop_worker(proc)
    text = log.read_text(errors="replace")
    assert "batch failed; stopping the worker" not in text, text[-3000:]
    wh = connect(WarehouseConfig(backend="server", host=clickhouse_server.host,
                                 port=clickhouse_server.tcp_port, database=database),
                 create_database=False)
    try:
        letters = wh.query(f"SELECT reason, original, kafka_partition, kafka_offset FROM {database}.dead_letters "
                           "WHERE stage = 'validate'")
        conflicts = wh.query(f"SELECT reason, event_id FROM {database}.dead_letters "
                             "WHERE stage = 'customers'")
        ids = {r[0] for r in wh.query(f"SELECT event_id FROM {database}.touchpoints")}
        sessions = wh.query(f"SELECT events FROM {database}.sessions FINAL "
                            "WHERE deleted = 0 AND customer_id = %(c)s",
                            {"c": f"{prefix}-cust"})
    finally:
        wh.close()
    want_ids = {orjson.loads(v)["event_id"] for v in good}
    counted = sum(int(r[0]) for r in sessions)
    fault_figures(f"poison corpus on the raw topic ({len(bad)} bad records)",
                  acknowledged=len(good), lost=len(want_ids - ids),
                  doubled=max(0, counted - len(good)),
                  note=f"{len(letters)} dead letters + {len(conflicts)} conflicting "
                  "duplicate, worker never stopped")
    got = Counter(r[0].split(":", 1)[0] for r in letters)
    assert got == Counter(code for _l, _r, code in bad), (got, letters[:5])
    assert len({(r[2], r[3]) for r in letters}) == len(bad)  # one per bad record
    assert ids == want_ids  # every valid neighbour, nothing of the corpus
    assert conflicts == [(f"conflicting_duplicate: event_id {conflicting['event_id']!r} "
                          "first seen with other type", conflicting["event_id"])]
    assert sum(int(r[0]) for r in sessions) == len(good)
