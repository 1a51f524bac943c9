"""Log-end and committed offsets, read the way both brokers answer right.

End offsets come from a Fetch response's high-water mark: Tansu's ListOffsets LATEST
answers the start of the last batch + 1, short of the end (docs/local-services.md);
on Apache Kafka both agree. Committed offsets (with their metadata: the validate stage
commits each raw partition's source clock there) are read per partition through a
consumer of the group that never joins it, so reading does not disturb the workers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from ingest.delivery import tcp_reachable
from journeys.errors import ServiceUnavailable

Ends = dict[tuple[str, int], int]


@dataclass(frozen=True, slots=True)
class Committed:
    offset: int | None  # None: the group never committed this partition
    metadata: str | None


def _consumer(bootstrap: str, group: str | None = None, timeout_s: float = 10.0
              ) -> KafkaConsumer:
    if not tcp_reachable(bootstrap):  # fail now, not after the client's bootstrap timeout
        raise ServiceUnavailable(f"Kafka at {bootstrap} is unreachable: nothing answers there")
    ms = max(2000, int(timeout_s * 1000))
    try:
        return KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False, fetch_max_wait_ms=20,
                             max_partition_fetch_bytes=1024, request_timeout_ms=ms,
                             bootstrap_timeout_ms=ms, allow_auto_create_topics=False,
                             auto_offset_reset="earliest")
    except (KafkaTimeoutError, KafkaConnectionError) as exc:
        raise ServiceUnavailable(f"Kafka at {bootstrap} is unreachable: {exc}") from exc


def partitions(bootstrap: str, topics: Iterable[str], *, timeout_s: float = 10.0
               ) -> dict[str, int]:
    """Partition count per existing topic among `topics` (missing ones left out)."""
    consumer = _consumer(bootstrap, timeout_s=timeout_s)
    try:
        existing = set(consumer.topics())
        return {t: len(consumer.partitions_for_topic(t) or ()) for t in topics if t in existing}
    except KafkaError as exc:
        raise ServiceUnavailable(f"Kafka at {bootstrap} is unreachable: {exc}") from exc
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topics: Mapping[str, int], *, timeout_s: float = 10.0
                ) -> Ends:
    """(topic, partition) -> log end, for `topics` (name -> partition count)."""
    tps = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
    if not tps:
        return {}
    consumer = _consumer(bootstrap, timeout_s=timeout_s)
    try:
        listed = consumer.end_offsets(tps)
        ends = {(tp.topic, tp.partition): int(listed.get(tp) or 0) for tp in tps}
        pending = [tp for tp in tps if ends[(tp.topic, tp.partition)] > 0]
        if pending:
            consumer.assign(pending)
            for tp in pending:
                consumer.seek(tp, ends[(tp.topic, tp.partition)] - 1)
            deadline = time.monotonic() + timeout_s
            while pending and time.monotonic() < deadline:
                consumer.poll(timeout_ms=100, max_records=1)
                for tp in list(pending):
                    hw = consumer.highwater(tp)
                    if hw is not None:
                        key = (tp.topic, tp.partition)
                        ends[key] = max(ends[key], int(hw))
                        pending.remove(tp)
        return ends
    except (KafkaTimeoutError, KafkaConnectionError) as exc:
        raise ServiceUnavailable(f"Kafka at {bootstrap} is unreachable: {exc}") from exc
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, tps: Iterable[tuple[str, int]], *,
              timeout_s: float = 10.0) -> dict[tuple[str, int], Committed]:
    """What `group` has committed for each (topic, partition), with its metadata."""
    consumer = _consumer(bootstrap, group, timeout_s)
    out: dict[tuple[str, int], Committed] = {}
    try:
        for topic, p in tps:
            got = consumer.committed(TopicPartition(topic, p), metadata=True,
                                     timeout_ms=int(timeout_s * 1000))
            out[(topic, p)] = (Committed(None, None) if got is None
                               else Committed(int(got.offset), got.metadata or None))
        return out
    except (KafkaTimeoutError, KafkaConnectionError) as exc:
        raise ServiceUnavailable(f"Kafka at {bootstrap} is unreachable: {exc}") from exc
    finally:
        consumer.close()
