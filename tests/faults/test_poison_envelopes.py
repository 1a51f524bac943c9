"""Records on the internal topics that make a stage raise (the stages only read what an
earlier stage wrote, so such a record is a bug or a corruption): each is dead-lettered
as `stage_error` with its stage and coordinates, its neighbours are processed, and the
worker does not stop (stream.agents.context.isolating, docs/stream.md "Poison records").
Partition 0 gets them in the current wire format (MessagePack), partition 1 as JSON (the
format 2 of older workers, still read: stream.stages.envelopes).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from journeys.settings import KafkaConfig, WarehouseConfig
from journeys.timeutil import now_ms
from journeys.topics import ensure_journey_topics
from stream.stages.envelopes import FORMAT, JSON_FORMAT, encode
from tests.faults.corpus import valid
from tests.integration.stream_support import start_worker, stop_worker, wait_pipeline, worker_env
from warehouse.connect import connect


def test_a_record_that_makes_a_stage_raise_is_dead_lettered(
        broker: Any, clickhouse_server: Any, unique_name: Callable[[str], str],
        tmp_path: Path) -> None:
    prefix = unique_name("pe")
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix,
                        partitions=2)
    ensure_journey_topics(kafka)
    good = valid(prefix, 40, now_ms() - 3 * 3_600_000)
    # decodable envelopes whose items have the wrong shape: each stage's prepare raises
    poison = {kafka.by_identity_topic: {"v": FORMAT, "e": [[1, 2]]},
              kafka.by_customer_topic: {"v": FORMAT, "e": [["k", 2]]},
              kafka.handovers_topic: {"v": FORMAT, "e": [], "h": [[1]]},
              kafka.step_reached_topic: {"v": FORMAT, "o": [[1]]}}
    database, app_id = unique_name("pedb"), unique_name("pew")
    log = tmp_path / "worker.log"
    proc = start_worker(worker_env(kafka, clickhouse_server.host, clickhouse_server.tcp_port,
                                   database, app_id), log)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    try:
        for i, value in enumerate(good):
            producer.send(kafka.raw_topic, key=f"{prefix}-cust".encode(), value=value)
            if i == len(good) // 2:  # in the middle of the traffic, on both partitions
                for topic, body in poison.items():
                    for p in range(kafka.partitions):
                        value = (encode(body) if p == 0 else
                                 orjson.dumps({**body, "v": JSON_FORMAT}))
                        producer.send(topic, value=value, partition=p)
        producer.flush(30)
        wait_pipeline(kafka, app_id, [proc], log)
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        producer.close()
        stop_worker(proc)
    text = log.read_text(errors="replace")
    assert "batch failed; stopping the worker" not in text, text[-3000:]
    assert "dead-lettered and skipped (poison rule)" in text
    wh = connect(WarehouseConfig(backend="server", host=clickhouse_server.host,
                                 port=clickhouse_server.tcp_port, database=database),
                 create_database=False)
    try:
        letters = wh.query(f"SELECT stage, reason, original FROM {database}.dead_letters "
                           "WHERE stage != 'validate'")
        sessions = wh.query(f"SELECT events FROM {database}.sessions FINAL "
                            "WHERE deleted = 0 AND customer_id = %(c)s",
                            {"c": f"{prefix}-cust"})
    finally:
        wh.close()
    where = sorted((stage, reason.split(" at ", 1)[1].rsplit("[", 1)[0])
                   for stage, reason, _o in letters)
    assert where == sorted([("identity", kafka.by_identity_topic)] * 2
                           + [("customers", kafka.by_customer_topic)] * 2
                           + [("customers", kafka.handovers_topic)] * 2
                           + [("alerts", kafka.step_reached_topic)] * 2), letters
    assert all(r.startswith("stage_error: ") for _s, r, _o in letters)
    # the original of either format reads as its JSON (a binary one: rendered)
    assert sorted(orjson.loads(o)["v"] for _s, _r, o in letters) == sorted(
        [FORMAT, JSON_FORMAT] * 4), letters
    assert sum(int(r[0]) for r in sessions) == len(good)  # every neighbour processed
