"""Collector → real broker: what a 202 promises is on the topics; a dead broker is 503
and, once it is back, resent requests land without loss."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from kafka.partitioner import murmur2

from deploy.local.broker import LocalBroker
from ingest.collector import create_collector_app
from ingest.generator import GeneratorConfig, generate_events
from journeys.events import EventValidator, Touchpoint
from journeys.settings import CollectorSettings, KafkaConfig
from tests.integration.ingest_support import free_port, kafka_config, read_topic, serve_collector

START = 1_772_323_200_000


def events(n: int, seed: int = 1, prefix: str = "") -> list[dict[str, Any]]:
    config = GeneratorConfig(seed=seed, start_ms=START, max_events=n, id_prefix=prefix,
                             visitors_per_hour=2000)
    return list(generate_events(config))


@pytest.fixture
def kafka(broker: LocalBroker, unique_name: Callable[[str], str]) -> KafkaConfig:
    return kafka_config(broker.bootstrap_servers, unique_name("coll"))


def test_batches_land_keyed_on_the_raw_topic_and_bad_items_in_dead_letters(
    kafka: KafkaConfig,
) -> None:
    good = events(1000)
    bad = [{**good[0], "event_id": "bad-channel", "channel": "fax"},
           {**good[1], "event_id": "bad-time", "occurred_at": "soon"}]
    settings = CollectorSettings(kafka=kafka)
    with TestClient(create_collector_app(settings)) as client:
        r = client.post("/v1/events", json=good)
        assert r.status_code == 202 and r.json()["accepted"] == 1000
        r = client.post("/v1/events", json={"batch": [*bad, good[2] | {"event_id": "one"}]})
        assert r.status_code == 202
        assert (r.json()["accepted"], r.json()["rejected"]) == (1, 2)
        # delivery was confirmed before the 202: the records are readable right away
    raw = read_topic(kafka.bootstrap_servers, kafka.raw_topic, expected=1001)
    assert len(raw) == 1001
    validator = EventValidator()
    parsed = [validator.parse(r.value) for r in raw]
    assert all(isinstance(t, Touchpoint) for t in parsed)
    assert {t.event_id for t in parsed} == {e["event_id"] for e in good} | {"one"}
    partitions = len({r.partition for r in raw})
    for record, tp in zip(raw, parsed, strict=True):
        assert isinstance(tp, Touchpoint)
        assert record.key == tp.identity_key.encode()  # keyed by customer, else anonymous id
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % partitions
    dead = read_topic(kafka.bootstrap_servers, kafka.dead_letter_topic, expected=2)
    letters = sorted((orjson.loads(r.value) for r in dead), key=lambda d: d["event_id"])
    assert [d["event_id"] for d in letters] == ["bad-channel", "bad-time"]
    assert letters[0]["reason"].startswith("unknown_channel:")
    assert letters[1]["reason"].startswith("bad_timestamp:")
    assert all(d["stage"] == "collector" for d in letters)
    assert orjson.loads(letters[0]["original"])["channel"] == "fax"


@pytest.fixture
def served(kafka: KafkaConfig) -> Iterator[str]:
    """The collector behind a real uvicorn server on 127.0.0.1 (stopped after the test)."""
    settings = CollectorSettings(kafka=kafka, port=free_port(), write_keys={"generator": "wk-1"},
                                 cors_origins=("https://shop.example",))
    with serve_collector(settings) as url:
        yield url


def test_over_real_http_with_write_key_and_cors(served: str, kafka: KafkaConfig) -> None:
    batch = events(100, seed=2)
    with httpx.Client(base_url=served, timeout=30) as http:
        pre = http.options("/v1/events", headers={
            "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        assert pre.status_code == 200
        assert http.post("/v1/events", json=batch).status_code == 401
        r = http.post("/v1/events", json=batch, headers={
            "Authorization": "Bearer wk-1", "Origin": "https://shop.example"})
        assert r.status_code == 202 and r.json()["accepted"] == 100
        assert r.headers["access-control-allow-origin"] == "https://shop.example"
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["pending"] == 0
    raw = read_topic(kafka.bootstrap_servers, kafka.raw_topic, expected=100)
    assert len(raw) == 100


def _post_until_accepted(client: TestClient, batch: list[dict[str, Any]],
                         statuses: list[int], deadline: float) -> None:
    """A well-behaved sender: resend on 503 after Retry-After, until accepted."""
    while True:
        r = client.post("/v1/events", json=batch)
        statuses.append(r.status_code)
        if r.status_code == 202:
            assert r.json()["accepted"] == len(batch)
            return
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert time.monotonic() < deadline, "collector never recovered"
        time.sleep(0.2)  # shorter than Retry-After: the breaker must hold meanwhile


def test_broker_down_means_503_then_recovery_without_loss(
    unique_name: Callable[[str], str],
) -> None:
    own = LocalBroker().start()  # our own broker: stopping it must not hurt other tests
    try:
        kafka = kafka_config(own.bootstrap_servers, unique_name("down"))
        settings = CollectorSettings(kafka=kafka, delivery_timeout_s=10)
        before, during = events(300, seed=3), events(300, seed=4)
        with TestClient(create_collector_app(settings)) as client:
            assert client.post("/v1/events", json=before).status_code == 202
            assert len(read_topic(kafka.bootstrap_servers, kafka.raw_topic, 300)) == 300

            own.stop()  # the in-memory broker loses its data: that is Tansu, not us
            started = time.monotonic()
            r = client.post("/v1/events", json=during[:100])
            assert r.status_code == 503 and r.headers["retry-after"]
            assert time.monotonic() - started < 5, "a dead broker must not hang requests"
            r = client.post("/v1/events", json=during[100:])
            assert r.status_code == 503  # refused at once while the breaker is open
            assert client.get("/readyz").status_code == 503

            statuses: list[int] = []
            restarter = threading.Timer(3.0, lambda: (own.start(), kafka_config(
                own.bootstrap_servers, kafka.topic_prefix)))
            restarter.start()
            try:
                deadline = time.monotonic() + 60
                _post_until_accepted(client, during[:100], statuses, deadline)
                _post_until_accepted(client, during[100:], statuses, deadline)
            finally:
                restarter.join()
            assert statuses[0] == 503 and statuses[-1] == 202
            assert client.get("/readyz").status_code == 200
        raw = read_topic(kafka.bootstrap_servers, kafka.raw_topic, expected=300)
        ids = [orjson.loads(r.value)["event_id"] for r in raw]
        assert sorted(ids) == sorted(e["event_id"] for e in during)  # all, exactly once
    finally:
        own.stop()


def test_stalled_broker_hits_the_pending_limit_not_memory(
    unique_name: Callable[[str], str],
) -> None:
    """A broker that stops answering (SIGSTOP: TCP still connects) leaves records
    unconfirmed; past max_pending the collector answers 503 instead of buffering more."""
    own = LocalBroker().start()
    try:
        kafka = kafka_config(own.bootstrap_servers, unique_name("stall"))
        settings = CollectorSettings(kafka=kafka, max_pending=150, delivery_timeout_s=30)
        batch = events(200, seed=5)
        with TestClient(create_collector_app(settings)) as client:
            assert client.post("/v1/events", json=batch[:10]).status_code == 202  # connected
            assert own.pid is not None
            os.kill(own.pid, signal.SIGSTOP)
            try:
                first: list[httpx.Response] = []
                waiting = threading.Thread(
                    target=lambda: first.append(client.post("/v1/events", json=batch[10:110])))
                waiting.start()
                deadline = time.monotonic() + 10
                while client.app.state.collector.producer.pending < 100:  # type: ignore[attr-defined]
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                r = client.post("/v1/events", json=batch[110:200])
                assert r.status_code == 503 and r.headers["retry-after"]
                assert "await broker acknowledgement" in r.json()["detail"]
            finally:
                os.kill(own.pid, signal.SIGCONT)
            waiting.join(40)
            assert first and first[0].status_code == 202
            assert client.post("/v1/events", json=batch[110:200]).status_code == 202
        raw = read_topic(kafka.bootstrap_servers, kafka.raw_topic, expected=200)
        assert sorted(orjson.loads(r.value)["event_id"] for r in raw) == sorted(
            e["event_id"] for e in batch)
    finally:
        own.stop()
