"""confluent-kafka (librdkafka) behind the small kafka-python surface TouchpointProducer
uses: `send`, `partitions_for`, `flush`, `close`.

Why: kafka-python spends ~60 µs of Python per record (docs/performance.md), which held
`journeys ingest` at 4–10k rows/s; librdkafka batches, compresses and sends in its own C
threads, so a produce costs ~1–2 µs of the caller's time. Delivery reports are served by
a daemon thread polling the client; they run there, like kafka-python's sender thread
callbacks, so `ingest.delivery.Delivery` works unchanged.

Options keep kafka-python's names (`ingest.tuning.ProducerTuning`); `librdkafka_config`
translates them. Keyed records get an explicit partition from the caller (Java's
murmur2, as kafka-python and the collector pick), so a customer's events land on the
same raw partition whichever client produced them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from journeys.errors import ConfigError

Headers = list[tuple[str, str | bytes | None]] | None  # what librdkafka takes
METADATA_MAX_AGE_S = 60.0  # partition counts are re-read this often (kafka-python: 5 min)


class RdKafkaError(KafkaError):
    """A librdkafka error, as a kafka-python error so the producer's breaker logic holds."""


def librdkafka_config(bootstrap_servers: str, client_id: str,
                      options: dict[str, Any]) -> dict[str, Any]:
    """librdkafka properties for kafka-python-named options (ProducerTuning)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "client.id": client_id,
        # Tansu creates unknown topics with 4 partitions; never let a producer do that
        "allow.auto.create.topics": False,
        "partitioner": "murmur2_random",  # Java's, for null-key fallbacks too
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "logger": logging.getLogger("ingest.rdkafka"),  # not librdkafka's own stderr lines
    }
    names = {
        "acks": "acks", "enable_idempotence": "enable.idempotence",
        "compression_type": "compression.type", "linger_ms": "linger.ms",
        "batch_size": "batch.size",
        "max_in_flight_requests_per_connection": "max.in.flight.requests.per.connection",
        "delivery_timeout_ms": "delivery.timeout.ms",
        "request_timeout_ms": "request.timeout.ms",
        "reconnect_backoff_max_ms": "reconnect.backoff.max.ms",
        "max_request_size": "message.max.bytes",
    }
    for name, prop in names.items():
        if name in options:
            value = options[name]
            conf[prop] = "none" if name == "compression_type" and value is None else value
    if "batch.size" in conf and "message.max.bytes" in conf:
        # a batch as large as the request limit hung Tansu without compression (a 1 MiB
        # uncompressed batch was never acknowledged; 256 KiB works): keep headroom
        conf["batch.size"] = min(conf["batch.size"], conf["message.max.bytes"] // 2)
    if isinstance(conf.get("acks"), int):
        conf["acks"] = str(conf["acks"])
    return conf


class _Ack:
    """One record's delivery callback: calls `fn(arg, error or metadata)` like
    kafka-python's `future.add_both(fn, arg)`."""

    __slots__ = ("arg", "fn")

    def __init__(self) -> None:
        self.fn: Callable[[Any, Any], None] | None = None
        self.arg: Any = None

    def add_both(self, fn: Callable[[Any, Any], None], arg: Any) -> None:
        self.fn, self.arg = fn, arg

    def __call__(self, err: Any, msg: Any) -> None:
        if self.fn is None:
            return
        self.fn(self.arg, _error(err) if err is not None else msg)


class _GroupAck:
    """One delivery callback for a whole group of records (`RdKafkaClient.send_many`):
    a per-record `_Ack` object and its indirection were ~1 µs of the caller's thread."""

    __slots__ = ("delivery", "failed")

    def __init__(self, delivery: Any) -> None:
        self.delivery = delivery
        self.failed = 0

    def __call__(self, err: Any, msg: Any) -> None:
        if err is None:
            self.delivery._record(-1, msg)
            return
        self.failed += 1  # errors are kept by a distinct number, not by record
        self.delivery._record(self.delivery.count + self.failed, _error(err))


def _error(err: Any) -> KafkaError:
    from confluent_kafka import KafkaError as CKError

    if err.code() == CKError.MSG_SIZE_TOO_LARGE:
        return MessageSizeTooLargeError(err.str())
    if err.code() in (CKError._MSG_TIMED_OUT, CKError._TIMED_OUT):
        return KafkaTimeoutError(err.str())
    return RdKafkaError(f"{err.name()}: {err.str()}")


class RdKafkaClient:
    """A confluent-kafka Producer with the kafka-python calls TouchpointProducer makes."""

    # A keyed record sent without a partition goes where Java's (and kafka-python's)
    # murmur2 puts it: librdkafka's `murmur2_random` partitioner is that hash, in C. The
    # pure-Python murmur2 was ~3 µs of an imported row (docs/performance.md).
    partitions_keys = True

    def __init__(self, *, bootstrap_servers: str, client_id: str,
                 allow_auto_create_topics: bool = False, max_block_ms: int = 60_000,
                 bootstrap_timeout_ms: int = 30_000, **options: Any) -> None:
        from confluent_kafka import KafkaException, Producer

        del allow_auto_create_topics  # always off (librdkafka_config)
        try:
            self._producer = Producer(librdkafka_config(bootstrap_servers, client_id, options))
        except KafkaException as exc:  # e.g. acks=1 with idempotence on
            raise ConfigError(f"producer options refused by librdkafka: {exc.args[0].str()}; "
                              "adjust JOURNEYS_KAFKA__PRODUCER") from None
        self._max_block_s = max_block_ms / 1000
        self._metadata_timeout_s = bootstrap_timeout_ms / 1000
        self._partitions: dict[str, tuple[float, list[int]]] = {}
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._serve, name="rdkafka-delivery",
                                        daemon=True)
        self._poller.start()

    def _serve(self) -> None:
        """Serve delivery reports (they run here, off the caller's thread)."""
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def partitions_for(self, topic: str) -> set[int]:
        """The topic's partition ids, from metadata at most METADATA_MAX_AGE_S old."""
        now = time.monotonic()
        known = self._partitions.get(topic)
        if known is not None and now - known[0] < METADATA_MAX_AGE_S:
            return set(known[1])
        try:
            meta = self._producer.list_topics(topic, timeout=self._metadata_timeout_s)
        except Exception as exc:  # KafkaException: no broker answered in time
            raise KafkaTimeoutError(f"no metadata for {topic}: {exc}") from exc
        info = meta.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise RdKafkaError(f"topic {topic} is unknown to the broker "
                               f"({info.error if info is not None else 'no metadata'})")
        ids = sorted(info.partitions)
        self._partitions[topic] = (now, ids)
        return set(ids)

    def send_many(self, records: Sequence[tuple[str, bytes | None, bytes, Any]],
                  delivery: Any) -> int:
        """Queue records (topic, key, value, headers) with librdkafka's partitioner and
        one callback into `delivery` for all; stops at the first record the queue does
        not take at once (full, too large, ...) and returns its index, so the caller
        sends the rest one by one through `send` (back-pressure and errors as before)."""
        produce = self._producer.produce
        ack = _GroupAck(delivery)
        for index, (topic, key, value, headers) in enumerate(records):
            try:
                produce(topic, value, key, -1, ack, headers=headers or None)
            except Exception:
                return index
        return len(records)

    def send(self, topic: str, *, value: bytes, key: bytes | None = None,
             headers: Headers = None, partition: int | None = None) -> _Ack:
        """Queue one record; waits up to max_block_ms while librdkafka's queue is full
        (back-pressure, as kafka-python's `max_block_ms`)."""
        ack = _Ack()
        where = -1 if partition is None else partition  # -1: the partitioner picks
        deadline = None
        while True:
            try:
                self._producer.produce(topic, value, key, where, ack, headers=headers or None)
                return ack
            except BufferError:
                now = time.monotonic()
                deadline = deadline or now + self._max_block_s
                if now >= deadline:
                    raise KafkaTimeoutError(
                        f"the producer queue stayed full for {self._max_block_s:.0f} s"
                    ) from None
                time.sleep(0.005)  # the poller thread drains delivery reports
            except Exception as exc:  # KafkaException: e.g. message too large
                if "MSG_SIZE_TOO_LARGE" in str(exc):
                    raise MessageSizeTooLargeError(str(exc)) from exc
                raise RdKafkaError(str(exc)) from exc

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(-1 if timeout is None else timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush up to `timeout`, then fail what is left (its callbacks report errors)."""
        left = self._producer.flush(10.0 if timeout is None else timeout)
        if left:
            self._producer.purge()
            self._producer.flush(1.0)
        self._stop.set()
        if threading.current_thread() is not self._poller:
            self._poller.join(2.0)
