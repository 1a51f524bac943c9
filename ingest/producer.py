"""kafka-python producer for touchpoints: keyed JSON to the raw topic, dead letters,
delivery confirmation and broker-down detection.

Why a wrapper: kafka-python 3.x has no `buffer_memory` bound, so a producer whose
broker is gone buffers without limit. This class caps unconfirmed records
(`max_pending`) and trips a breaker on delivery failures, so the collector answers
503 + Retry-After instead of growing memory, and rebuilds the client when the broker
is back (a restarted Tansu broker rejects the old idempotent producer id for good).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError
from kafka.partitioner.default import murmur2

from ingest.delivery import Delivery, tcp_reachable
from ingest.spool import Headers, SpoolRecord, SpoolWriter
from ingest.tuning import ProducerTuning
from journeys.errors import ServiceUnavailable
from journeys.events import Rejection, Touchpoint
from journeys.settings import KafkaConfig
from journeys.timeutil import now_ms

log = logging.getLogger(__name__)


class BrokerUnavailable(ServiceUnavailable):
    """The broker cannot take records right now; retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1.0, retry_after)


class _KeyPartitions:
    """The partition kafka-python (and Java) would pick for a key, memoised.

    Pure-Python murmur2 was ~20% of kafka-python's CPU per record; customers send
    many events, so a key's partition is worth remembering (until the count changes).
    """

    def __init__(self, limit: int = 50_000) -> None:
        self._cache: dict[bytes, int] = {}
        self._count = 0
        self._limit = limit

    def pick(self, key: bytes, partitions: list[int]) -> int:
        if len(partitions) != self._count:
            self._cache = {}
            self._count = len(partitions)
        index = self._cache.get(key)
        if index is None:
            if len(self._cache) >= self._limit:
                self._cache = {}
            index = self._cache[key] = (murmur2(key) & 0x7FFFFFFF) % len(partitions)
        return partitions[index]


def _close_quietly(client: KafkaProducer) -> None:
    """Abort a dead client: its unsent records fail now instead of at their timeout.

    kafka-python 3.0's close(timeout=0) raises from its flush before it force-closes,
    leaving the records waiting; so force-close the sender first (private, guarded).
    """
    sender = getattr(client, "_sender", None)
    force = getattr(sender, "force_close", None)
    if callable(force):
        force()
    try:
        client.close(timeout=1)
    except Exception as exc:
        log.debug("closing a dead producer: %s", exc)


def _client_factory(name: str) -> Callable[..., KafkaProducer]:
    """The client class for `ProducerTuning.client` (both take kafka-python's options)."""
    if name == "confluent-kafka":
        from ingest.rdkafka import RdKafkaClient

        return RdKafkaClient  # the subset we call
    return KafkaProducer


class TouchpointProducer:
    """Produces touchpoints (keyed by customer, else anonymous id) and dead letters.

    Thread-safe. The kafka-python client is created lazily and rebuilt after the
    broker was unreachable, so a collector can start before its broker. With a `spool`
    every group of records is appended to it and fsync'd before it is produced
    (ingest.spool: the embedded broker keeps nothing over a crash).
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        tuning: ProducerTuning | None = None,
        *,
        client_id: str = "journeys-ingest",
        factory: Callable[..., KafkaProducer] | None = None,
        spool: SpoolWriter | None = None,
    ) -> None:
        self.kafka = kafka
        self.spool = spool
        self.tuning = (tuning or ProducerTuning()).with_overrides(kafka.producer)
        self.client_id = client_id
        self._factory = factory or _client_factory(self.tuning.client)
        self._client: KafkaProducer | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._down_until = 0.0
        self._last_error: str | None = None
        self._closed = False
        self._generation = 0  # bumped per client, so a dead client's failures stay its own
        self._key_partitions = _KeyPartitions()

    # -- state ----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records sent but not yet acknowledged or failed."""
        return self._pending

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def ensure_available(self, count: int = 0) -> None:
        """Raise BrokerUnavailable unless `count` more records can be taken now."""
        now = time.monotonic()
        if now < self._down_until:
            raise BrokerUnavailable(
                f"Kafka at {self.kafka.bootstrap_servers} is unavailable: {self._last_error}",
                self._down_until - now,
            )
        if self._pending and self._pending + count > self.tuning.max_pending:
            raise BrokerUnavailable(
                f"{self._pending} records await broker acknowledgement "
                f"(limit {self.tuning.max_pending}); slow down",
                self.tuning.retry_after_s,
            )
        self._connected_client()

    def ready(self) -> bool:
        """For /readyz: the breaker is closed and the broker answers TCP."""
        return time.monotonic() >= self._down_until and tcp_reachable(
            self.kafka.bootstrap_servers
        )

    def probe_stalled(self) -> bool:
        """Called while a delivery is slow: if no broker answers TCP, trip the breaker now
        (failing the waiting records) instead of waiting out `delivery_timeout_ms`."""
        if tcp_reachable(self.kafka.bootstrap_servers):
            return False
        self._trip(ConnectionRefusedError(f"no broker answers at {self.kafka.bootstrap_servers}"))
        return True

    def _trip(self, error: BaseException | str, generation: int | None = None) -> None:
        with self._lock:
            if generation is not None and generation != self._generation:
                return  # failures of a client already replaced say nothing about the new one
            stale, self._client = self._client, None
            self._generation += 1
        self._last_error = str(error) or type(error).__name__
        self._down_until = time.monotonic() + self.tuning.retry_after_s
        if stale is not None:
            # Pending records fail now (their requests get 503 and are retried);
            # a fresh client is needed anyway after a broker restart.
            threading.Thread(target=_close_quietly, args=(stale,), daemon=True).start()
        log.warning("broker unavailable (%s); refusing for %.1fs", self._last_error,
                    self.tuning.retry_after_s)

    def _connected_client(self) -> KafkaProducer:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._closed:
                raise BrokerUnavailable("producer is closed", self.tuning.retry_after_s)
            if self._client is None:
                if not tcp_reachable(self.kafka.bootstrap_servers):
                    exc: BaseException = ConnectionRefusedError(
                        f"no broker answers at {self.kafka.bootstrap_servers}")
                else:
                    try:
                        self._client = self._factory(
                            bootstrap_servers=self.kafka.bootstrap_servers,
                            client_id=self.client_id,
                            allow_auto_create_topics=False,  # Tansu would pick 4 partitions
                            **self.tuning.client_options(),
                        )
                        return self._client
                    except KafkaError as e:
                        exc = e
            else:
                return self._client
        self._trip(exc)
        raise BrokerUnavailable(
            f"Kafka at {self.kafka.bootstrap_servers} is unavailable: {exc}",
            self.tuning.retry_after_s,
        )

    # -- producing ------------------------------------------------------------------

    def send_batch(
        self,
        touchpoints: Sequence[Touchpoint],
        rejections: Sequence[Rejection] = (),
        *,
        stage: str,
        headers: Sequence[Headers | None] | None = None,
        reject_headers: Sequence[Headers | None] | None = None,
        values: Sequence[bytes] | None = None,
    ) -> tuple[Delivery, list[Rejection]]:
        """Send touchpoints to the raw topic and rejections to the dead-letter topic.

        Returns one Delivery for all records, and the touchpoints refused by the
        client itself (record too large), which were dead-lettered in the same
        delivery. Raises BrokerUnavailable before sending anything when the breaker
        is open or too much is unconfirmed. `values`: each touchpoint's `to_json()`,
        when the caller already has it (ingest.batchmap builds it with the event).
        """
        self.ensure_available(len(touchpoints) + len(rejections))
        client = self._connected_client()
        raw, dlq = self.kafka.raw_topic, self.kafka.dead_letter_topic
        received = now_ms()
        records: list[SpoolRecord] = []
        oversized: list[Rejection] = []
        limit = self.tuning.max_request_size - 1024
        if values is not None and touchpoints and max(map(len, values)) <= limit:
            # the common case (ingest.batchmap made the bytes, none too large): one pass
            records = [(raw, tp.identity_key.encode(), value, hdr) for tp, value, hdr in zip(
                touchpoints, values, headers or [None] * len(touchpoints), strict=True)]
            touchpoints = ()
        for i, tp in enumerate(touchpoints):
            value = values[i] if values is not None else tp.to_json()
            hdr = headers[i] if headers else None
            if len(value) > limit:
                rej = Rejection(f"too_large: event is {len(value)} bytes, broker limit "
                                f"{limit}", value[:65_536], tp.event_id)
                oversized.append(rej)
                records.append((dlq, None, rej.to_dead_letter(stage=stage,
                                                              received_at_ms=received), hdr))
            else:
                records.append((raw, tp.identity_key.encode(), value, hdr))
        for i, rej in enumerate(rejections):
            if len(rej.raw) > limit // 2:
                rej = Rejection(rej.reason, rej.raw[:65_536], rej.event_id)
            hdr = reject_headers[i] if reject_headers else None
            records.append((dlq, None, rej.to_dead_letter(stage=stage, received_at_ms=received),
                            hdr))
        return self._send_records(client, records), oversized

    def send_keyed(self, records: Iterable[tuple[bytes, bytes, Headers | None]], *,
                   where: bool = True) -> tuple[Delivery, list[int]]:
        """Send pre-serialised touchpoints (key, value, headers) to the raw topic, in
        order; also returns the partition each went to (ingest.importer's late check),
        or [] with `where=False` (then a client that hashes keys itself picks them: the
        same partitions, without murmur2 in Python)."""
        client = self._connected_client()
        raw = self.kafka.raw_topic
        items = [(raw, k, v, h) for k, v, h in records]
        self.ensure_available(len(items))
        if not where and getattr(client, "partitions_keys", False):
            return self._send_records(client, items), []
        partitions = sorted(client.partitions_for(raw) or ())
        picked = [self._key_partitions.pick(k, partitions) for _t, k, _v, _h in items
                  ] if partitions else []
        return self._send_records(client, items, picked or None), picked

    def send_raw(self, topic: str, values: Iterable[tuple[bytes | None, bytes]]) -> Delivery:
        """Send pre-serialised (key, value) pairs, e.g. generator output, to `topic`."""
        records = [(topic, k, v, None) for k, v in values]
        self.ensure_available(len(records))
        return self._send_records(self._connected_client(), records)

    def send_spooled(self, records: Sequence[SpoolRecord]) -> Delivery:
        """Send records read back from a spool (ingest.spool.replay), in order, to the
        partitions they went to the first time (same keys, same partitioner)."""
        self.ensure_available(len(records))
        return self._send_records(self._connected_client(), records)

    def _send_records(
        self, client: KafkaProducer, records: Sequence[SpoolRecord],
        chosen: Sequence[int] | None = None,
    ) -> Delivery:
        """Send in order; `chosen`: each record's partition, already picked (send_keyed)."""
        delivery = Delivery(len(records))
        if not records:
            return delivery
        if self.spool is not None:
            self.spool.append(records)  # on disk before anything can be acknowledged
        with self._lock:
            # a bool first: inside `if client is not self._client: raise`, mypy would
            # narrow `client` to the Optional type of `_client` for the rest
            replaced = client is not self._client
            if replaced:
                raise BrokerUnavailable(f"Kafka is unavailable: {self._last_error}",
                                        self.tuning.retry_after_s)
            self._pending += len(records)
            generation = self._generation
        delivery.add_done_callback(lambda d: self._settled(d, generation))
        partitions: dict[str, list[int]] = {}
        own = getattr(client, "partitions_keys", False)  # the client hashes keys itself
        start = 0
        if own and chosen is None:  # librdkafka: the whole group in one loop
            try:
                for topic in {t for t, k, _v, _h in records if k is not None}:
                    partitions[topic] = sorted(client.partitions_for(topic))
            except (KafkaError, AssertionError) as exc:
                for rest in range(len(records)):
                    delivery._record(rest, exc)
                return delivery
            start = client.send_many(records, delivery)  # RdKafkaClient only (partitions_keys)
        for index in range(start, len(records)):
            topic, key, value, hdr = records[index]
            try:
                partition = None
                if chosen is not None:
                    partition = chosen[index]
                elif key is not None:
                    if topic not in partitions:  # also fails fast on an unknown topic
                        partitions[topic] = sorted(client.partitions_for(topic))
                    if not own:
                        partition = self._key_partitions.pick(key, partitions[topic])
                future = client.send(topic, value=value, key=key, headers=hdr,
                                     partition=partition)
            except MessageSizeTooLargeError as exc:  # checked above; belt and braces
                delivery._record(index, exc)
                continue
            except (KafkaError, AssertionError) as exc:
                # Metadata unavailable / client closed under us: fail the rest too.
                for rest in range(index, len(records)):
                    delivery._record(rest, exc)
                break
            future.add_both(delivery._record, index)
        return delivery

    def _settled(self, delivery: Delivery, generation: int) -> None:
        with self._lock:
            self._pending -= delivery.count
        err = delivery.first_error()
        if err is not None and not isinstance(err, MessageSizeTooLargeError):
            self._trip(err, generation)

    def flush(self, timeout: float | None = None) -> None:
        client = self._client
        if client is not None:
            client.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is buffered (up to `timeout`) and close the client."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close(timeout=timeout)
        if self.spool is not None:
            self.spool.close()


def bulk_producer(kafka: KafkaConfig, *, client_id: str,
                  spool_dir: Path | None = None) -> TouchpointProducer:
    """A producer for `journeys ingest` / `journeys generate`; with `spool_dir` (the
    target is a `journeys up`, deploy.discovery `Target.spool_dir`) every group of
    records is fsync'd into that spool before it is produced, so an import that
    reports success survives a crash of `up` (its replay brings it back)."""
    spool = SpoolWriter(spool_dir, require_gate=True) if spool_dir else None
    return TouchpointProducer(kafka, ProducerTuning.for_bulk(), client_id=client_id,
                              spool=spool)
