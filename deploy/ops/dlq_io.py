"""The Kafka side of `journeys dlq`: read a topic to its end (dead letters, the redrive
log), and redrive: `sending` marks, the original bytes to the raw topic, `sent` marks
(the order and why: deploy.ops.letters). Assigns partitions, never joins a group.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from deploy.ops import offsets
from deploy.ops.letters import Letter, LetterFilter, Mark, fold, parse
from ingest.tuning import ProducerTuning
from journeys.errors import ServiceUnavailable
from journeys.events import Touchpoint
from journeys.settings import KafkaConfig
from journeys.timeutil import now_ms
from journeys.topics import CHANGELOG_TOPIC_CONFIGS, ensure_topics

Record = tuple[int, int, int | None, bytes | None, bytes | None]  # partition, offset, ts, k, v
HEADER = "journeys-redriven-from"  # on each redriven record: the dead letter's key


def read_topic(bootstrap: str, topic: str, *, timeout_s: float = 120.0,
               on_progress: Callable[[int, int], None] | None = None) -> Iterator[Record]:
    """Every record of `topic` up to its end as of now (nothing if it does not exist)."""
    parts = offsets.partitions(bootstrap, [topic])
    ends = {p: e for (_t, p), e in offsets.end_offsets(bootstrap, parts).items() if e > 0}
    if not ends:
        return
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", fetch_max_wait_ms=50,
                             allow_auto_create_topics=False)
    try:
        tps = {p: TopicPartition(topic, p) for p in ends}
        consumer.assign(list(tps.values()))
        consumer.seek_to_beginning(*tps.values())
        total, seen = sum(ends.values()), 0
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tps[p]) < e for p, e in ends.items()):
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"{topic}: not read to its end in {timeout_s:.0f} s")
            for tp, records in consumer.poll(timeout_ms=200, max_records=5000).items():
                for r in records:
                    if r.offset < ends[tp.partition]:
                        seen += 1
                        yield tp.partition, r.offset, r.timestamp, r.key, r.value
            if on_progress is not None:
                on_progress(seen, total)
    finally:
        consumer.close()


def read_letters(kafka: KafkaConfig, selection: LetterFilter,
                 on_progress: Callable[[int, int], None] | None = None) -> list[Letter]:
    """The dead letters that match `selection`, in topic order per partition."""
    topic = kafka.dead_letter_topic
    letters = (parse(topic, p, o, ts, v)
               for p, o, ts, _k, v in read_topic(kafka.bootstrap_servers, topic,
                                                 on_progress=on_progress))
    return [letter for letter in letters if selection.matches(letter)]


def read_marks(kafka: KafkaConfig) -> dict[bytes, Mark]:
    """The redrive log, folded (empty when nothing was ever redriven)."""
    records = read_topic(kafka.bootstrap_servers, kafka.redrive_log_topic)
    return fold((k, v) for _p, _o, _ts, k, v in records)


@dataclass
class RedriveResult:
    sent: list[tuple[Letter, Mark]] = field(default_factory=list)
    failed: list[tuple[Letter, str]] = field(default_factory=list)  # left in doubt


def _producer(kafka: KafkaConfig) -> KafkaProducer:
    options = ProducerTuning.for_bulk().with_overrides(kafka.producer).client_options()
    try:
        return KafkaProducer(bootstrap_servers=kafka.bootstrap_servers,
                             client_id="journeys-dlq", allow_auto_create_topics=False,
                             **options)
    except KafkaError as exc:
        raise ServiceUnavailable(f"Kafka at {kafka.bootstrap_servers} is unavailable: "
                                 f"{exc}") from exc


def _settle(futures: Sequence[Any], timeout_s: float) -> list[Any]:
    """Each future's RecordMetadata, or the exception it failed with."""
    out: list[Any] = []
    for f in futures:
        try:
            out.append(f.get(timeout=timeout_s))
        except KafkaError as exc:
            out.append(exc)
    return out


def redrive(kafka: KafkaConfig, items: Sequence[tuple[Letter, Touchpoint | None]], *,
            timeout_s: float = 120.0) -> RedriveResult:
    """Mark, produce, mark (deploy.ops.letters). A `sending` mark that cannot be written
    stops everything before any event is sent."""
    ensure_topics(kafka.bootstrap_servers, [kafka.redrive_log_topic], 1,
                  replication_factor=kafka.replication_factor, configs=CHANGELOG_TOPIC_CONFIGS)
    producer = _producer(kafka)
    result = RedriveResult()
    try:
        log = kafka.redrive_log_topic
        started = now_ms()
        marks = _settle([producer.send(log, key=letter.key, value=Mark(
            "sending", started, letter.event_id).encode()) for letter, _tp in items], timeout_s)
        if any(isinstance(m, Exception) for m in marks):
            first = next(m for m in marks if isinstance(m, Exception))
            raise ServiceUnavailable(f"could not write the redrive log {log}: {first}; "
                                     "nothing was sent")
        sent = _settle([producer.send(
            kafka.raw_topic, value=letter.original, headers=[(HEADER, letter.key)],
            key=tp.identity_key.encode() if tp is not None else None)
            for letter, tp in items], timeout_s)
        done = []
        for (letter, _tp), meta in zip(items, sent, strict=True):
            if isinstance(meta, Exception):
                result.failed.append((letter, f"{type(meta).__name__}: {meta}"))
                continue
            mark = Mark("sent", now_ms(), letter.event_id, meta.partition, meta.offset)
            done.append(producer.send(log, key=letter.key, value=mark.encode()))
            result.sent.append((letter, mark))
        for (letter, _m), meta in zip(result.sent, _settle(done, timeout_s), strict=True):
            if isinstance(meta, Exception):  # sent, but the log still says `sending`
                result.failed.append((letter, f"sent, but not marked sent: {meta}"))
        return result
    finally:
        producer.close(timeout=10)
