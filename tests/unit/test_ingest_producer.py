"""Producer wrapper without a broker: options, delivery bookkeeping, a dead address."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from kafka import KafkaProducer

from ingest.delivery import Delivery, tcp_reachable
from ingest.producer import BrokerUnavailable, TouchpointProducer
from ingest.tuning import ProducerTuning
from journeys.errors import ConfigError
from journeys.settings import KafkaConfig


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tuning_options_are_kafka_python_options() -> None:
    for tuning in (ProducerTuning(), ProducerTuning.for_bulk()):
        opts = tuning.client_options()
        assert set(opts) <= set(KafkaProducer.DEFAULT_CONFIG)
        assert opts["acks"] == "all" and opts["enable_idempotence"] is True
        assert opts["delivery_timeout_ms"] > opts["request_timeout_ms"] + opts["linger_ms"]


def test_delivery_settles_once_with_errors() -> None:
    seen: list[Delivery] = []
    d = Delivery(3, on_done=seen.append)
    d._record(0, object())
    d._record(2, TimeoutError("x"))
    assert not d.done and not seen
    d._record(1, object())
    assert d.done and not d.ok and list(d.errors) == [2] and seen == [d]
    late: list[Delivery] = []
    d.add_done_callback(late.append)  # already done: runs at once
    assert late == [d] and d.wait(0)
    empty = Delivery(0)
    assert empty.done and empty.ok and empty.first_error() is None


def test_dead_address_trips_the_breaker_fast() -> None:
    kafka = KafkaConfig(bootstrap_servers=f"127.0.0.1:{_closed_port()}")
    producer = TouchpointProducer(kafka, ProducerTuning(retry_after_s=5))
    assert not tcp_reachable(kafka.bootstrap_servers)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as first:
        producer.ensure_available()
    assert first.value.retry_after == 5
    with pytest.raises(BrokerUnavailable) as second:  # breaker open: no new probe
        producer.send_batch([], stage="test")
    assert 1 <= second.value.retry_after <= 5
    assert time.monotonic() - started < 2
    assert not producer.ready() and "no broker answers" in (producer.last_error or "")
    producer.close()


def test_tcp_probe_accepts_any_listed_server() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert tcp_reachable(f"127.0.0.1:{_closed_port()},127.0.0.1:{port}")
    assert not tcp_reachable("not-a-server")


def test_operator_overrides_apply_over_the_role_defaults() -> None:
    bulk = ProducerTuning.for_bulk().with_overrides({"linger_ms": 50, "compression_type": None,
                                                     "retry_after_s": 3})
    assert (bulk.linger_ms, bulk.compression_type, bulk.retry_after_s) == (50, None, 3)
    assert bulk.batch_size == ProducerTuning.for_bulk().batch_size  # the rest kept
    assert ProducerTuning().with_overrides({}) == ProducerTuning()
    kafka = KafkaConfig(producer={"acks": 1, "linger_ms": 7})
    producer = TouchpointProducer(kafka)
    assert (producer.tuning.acks, producer.tuning.linger_ms) == (1, 7)


@pytest.mark.parametrize("options", [{"lingr_ms": 5}, {"linger_ms": "5"},
                                     {"enable_idempotence": 1}, {"acks": "some"},
                                     {"batch_size": True}])
def test_unknown_or_mistyped_producer_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="producer option"):
        ProducerTuning().with_overrides(options)


def test_client_choice_is_checked() -> None:
    assert ProducerTuning.for_bulk().client == "confluent-kafka"
    assert ProducerTuning().client == "kafka-python"  # the collector keeps kafka-python
    assert ProducerTuning().with_overrides({"client": "confluent-kafka"}).client == (
        "confluent-kafka")
    with pytest.raises(ConfigError, match="producer option client"):
        ProducerTuning().with_overrides({"client": "librdkafka"})


@pytest.mark.parametrize("tuning", [ProducerTuning(), ProducerTuning.for_bulk(),
                                    ProducerTuning.for_bulk().with_overrides(
                                        {"compression_type": None, "acks": 1,
                                         "enable_idempotence": False})])
def test_every_option_translates_to_a_librdkafka_property(tuning: ProducerTuning) -> None:
    """librdkafka refuses unknown properties and bad values when the client is built
    (no broker needed): every option we pass must be one it takes."""
    from confluent_kafka import Producer

    from ingest.rdkafka import librdkafka_config

    options = tuning.client_options()
    conf = librdkafka_config(f"127.0.0.1:{_closed_port()}", "test", options)
    for name in ("acks", "linger_ms", "batch_size", "delivery_timeout_ms",
                 "compression_type", "enable_idempotence", "max_request_size"):
        assert name in options  # each of these has its librdkafka name in conf
    assert conf["allow.auto.create.topics"] is False
    assert conf["partitioner"] == "murmur2_random"  # Java's, like kafka-python's
    assert conf["batch.size"] <= conf["message.max.bytes"] // 2
    assert conf["compression.type"] == (options["compression_type"] or "none")
    Producer(conf).flush(0)  # raises KafkaException on an unknown or invalid property


def test_dead_address_trips_the_breaker_with_the_bulk_client_too() -> None:
    kafka = KafkaConfig(bootstrap_servers=f"127.0.0.1:{_closed_port()}")
    producer = TouchpointProducer(kafka, ProducerTuning.for_bulk().with_overrides(
        {"retry_after_s": 5}))
    with pytest.raises(BrokerUnavailable) as first:
        producer.ensure_available()
    assert first.value.retry_after == 5 and not producer.ready()
    producer.close()


def test_options_librdkafka_refuses_are_a_config_error() -> None:
    from ingest.rdkafka import RdKafkaClient

    options = ProducerTuning.for_bulk().with_overrides({"acks": 1}).client_options()
    with pytest.raises(ConfigError, match="acks"):
        RdKafkaClient(bootstrap_servers=f"127.0.0.1:{_closed_port()}", client_id="t", **options)


class _GroupClient:
    """A client that partitions keys itself (as RdKafkaClient): records sent through
    `send_many` until `stop_at`, then one by one through `send`; acks at once."""

    partitions_keys = True

    def __init__(self, stop_at: int | None = None, **_: Any) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, Any]] = []
        self.stop_at = stop_at
        self.grouped = 0

    def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    def send_many(self, records: list[Any], delivery: Delivery) -> int:
        stop = len(records) if self.stop_at is None else min(self.stop_at, len(records))
        for record in records[:stop]:
            self.sent.append(record)
            delivery._record(-1, object())
        self.grouped += stop
        return stop

    def send(self, topic: str, *, value: bytes, key: bytes | None = None, headers: Any = None,
             partition: int | None = None) -> Any:
        self.sent.append((topic, key, value, headers))

        class _Done:
            @staticmethod
            def add_both(fn: Any, arg: Any) -> None:
                fn(arg, object())
        return _Done()

    def close(self, timeout: float | None = None) -> None:
        pass


@pytest.mark.parametrize("stop_at", [None, 0, 2])
def test_grouped_sends_produce_what_the_record_loop_did(stop_at: int | None) -> None:
    """The bytes given (`values=`) or built (`to_json`), grouped or one by one: the same
    records, keys, headers and order, and one settled Delivery."""
    from journeys.events import Rejection, Touchpoint

    tps = [Touchpoint(f"e{i}", "view", "web", 1_772_359_200_000 + i,
                      customer_id=f"c{i}" if i % 2 else None, anonymous_id=f"a{i}")
           for i in range(5)]
    rej = [Rejection("unknown_channel: 'fax'", b'{"x":1}', "bad")]
    hdrs = [[("journeys-row", str(i).encode())] for i in range(5)]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        kafka = KafkaConfig(bootstrap_servers=f"127.0.0.1:{listener.getsockname()[1]}")
        got = []
        for values in (None, [tp.to_json() for tp in tps]):
            client = _GroupClient(stop_at)
            producer = TouchpointProducer(kafka, ProducerTuning.for_bulk(),
                                          factory=lambda **kw: client)
            delivery, oversized = producer.send_batch(tps, rej, stage="import", headers=hdrs,
                                                      values=values)
            assert delivery.wait(1) and delivery.ok and not oversized
            assert producer.pending == 0
            assert client.grouped == (6 if stop_at is None else stop_at)
            got.append([(t, k, v if t.endswith("touchpoints") else None, h)
                        for t, k, v, h in client.sent])
    assert got[0] == got[1]
    raw = [r for r in got[0] if r[0].endswith("touchpoints")]
    assert [r[1] for r in raw] == [b"a0", b"c1", b"a2", b"c3", b"a4"]
    assert [r[3] for r in raw] == hdrs and len(got[0]) == 6
