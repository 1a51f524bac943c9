"""Control messages on the stream's internal topics: the contract between the commands
and API that send them and the stream stages that act on them (docs/operations.md
"Forget a customer").

`forget`: a customer and the anonymous ids linked to it are to be forgotten. It is one
envelope on the `<prefix>.by-identity` topic, `{"v": 2, "e": [], "f": [[customer_id,
[anonymous_id, ...]]]}`, sent to the by-identity partition of every one of those ids
(where the identity stage keeps a device's link, and where the ids' events pass). The
identity stage drops the links of those devices to that customer and passes a forget
item on to the by-customer partition of every id, after everything it forwarded from
that partition before; the customer stage empties those keys' state there (sessions,
journeys, holds, handovers). So every event read before the forget is gone with the
state, and an event read after it starts afresh.

Partitioning is the stream's (CRC-32 of the key's UTF-8 bytes modulo the partitions),
defined here so a sender outside the stream picks the same partitions.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

import orjson

from journeys.errors import ServiceUnavailable
from journeys.settings import KafkaConfig

ENVELOPE_FORMAT = 2
"""`v` of the JSON internal envelopes: the forget control envelope is sent as JSON (no
encoder needed by its senders); the stages write MessagePack (format 3) and read both
(stream.stages.envelopes, docs/stream.md "Wire formats")."""


def partition_for(key: str | bytes, partitions: int) -> int:
    """The internal partition of a key (anonymous id, customer id, table key)."""
    data = key.encode() if isinstance(key, str) else key
    return zlib.crc32(data) % partitions


def forget_keys(customer_id: str, anonymous_ids: Iterable[str]) -> list[str]:
    """Every stream key of a customer: its id, then its linked devices, sorted."""
    return [customer_id, *sorted(set(anonymous_ids) - {customer_id})]


def forget_envelopes(customer_id: str, anonymous_ids: Sequence[str],
                     partitions: int) -> list[tuple[int, bytes]]:
    """(by-identity partition, envelope) for each partition holding one of the ids."""
    keys = forget_keys(customer_id, anonymous_ids)
    body = orjson.dumps({"v": ENVELOPE_FORMAT, "e": [], "f": [[keys[0], keys[1:]]]})
    return [(p, body) for p in sorted({partition_for(k, partitions) for k in keys})]


def send_forget(kafka: KafkaConfig, customer_id: str, anonymous_ids: Sequence[str], *,
                timeout_s: float = 30.0) -> dict[int, int]:
    """Produce the forget envelopes to `<prefix>.by-identity` and wait for the broker's
    acknowledgement; returns {partition: offset after the envelope}."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all",
                                 client_id="journeys-forget", allow_auto_create_topics=False)
    except KafkaError as exc:
        raise ServiceUnavailable(f"Kafka at {kafka.bootstrap_servers} is unavailable: "
                                 f"{exc}") from exc
    try:
        futures = [producer.send(kafka.by_identity_topic, value=body, partition=p)
                   for p, body in forget_envelopes(customer_id, anonymous_ids,
                                                   kafka.partitions)]
        producer.flush(timeout=timeout_s)
        out: dict[int, int] = {}
        for f in futures:
            meta = f.get(timeout=timeout_s)
            out[meta.partition] = max(out.get(meta.partition, 0), meta.offset + 1)
        return out
    except KafkaError as exc:
        raise ServiceUnavailable(f"could not send the forget to {kafka.by_identity_topic}: "
                                 f"{exc}") from exc
    finally:
        producer.close(timeout=5)
