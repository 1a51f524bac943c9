"""Create the product's Kafka topics explicitly, on Apache Kafka and on the embedded broker.

Why explicit: Tansu auto-creates an unknown topic with 4 partitions on first use, and
Faust then loops on `PartitionsMismatch` when a source topic and its table's changelog
differ. So every topic is created up front with the configured partition count.

Only calls that work on both brokers are used: CreateTopics through kafka-python's
admin client, and topic/partition listing through a consumer's metadata (the admin
client's describe/list calls fail to decode Tansu's replies).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import AlterConfigOp, ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)

from journeys.errors import ConfigError, ServiceUnavailable
from journeys.settings import KafkaConfig

_CLIENT_ID = "journeys-topics"
_UNREACHABLE = (KafkaTimeoutError, KafkaConnectionError)


def _client_kwargs(
    cls: type, bootstrap_servers: str, timeout_s: float, **extra: Any
) -> dict[str, Any]:
    """Client options, keeping only those this kafka-python version knows
    (bootstrap_timeout_ms is 3.x only; unknown options raise)."""
    ms = max(1000, int(timeout_s * 1000))
    wanted = {
        "bootstrap_servers": bootstrap_servers,
        "client_id": _CLIENT_ID,
        "request_timeout_ms": ms,
        "bootstrap_timeout_ms": ms,
        **extra,
    }
    known = getattr(cls, "DEFAULT_CONFIG", {})
    return {k: v for k, v in wanted.items() if k in known}


def _metadata_consumer(bootstrap_servers: str, timeout_s: float) -> KafkaConsumer:
    kwargs = _client_kwargs(
        KafkaConsumer, bootstrap_servers, timeout_s, allow_auto_create_topics=False
    )
    try:
        return KafkaConsumer(**kwargs)
    except _UNREACHABLE as exc:
        raise ServiceUnavailable(f"Kafka at {bootstrap_servers} is unreachable: {exc}") from exc


def list_topics(bootstrap_servers: str, *, timeout_s: float = 10.0) -> set[str]:
    """Names of all topics (works on Tansu, unlike the admin client's list_topics)."""
    consumer = _metadata_consumer(bootstrap_servers, timeout_s)
    try:
        return set(consumer.topics())
    except _UNREACHABLE as exc:
        raise ServiceUnavailable(f"Kafka at {bootstrap_servers} is unreachable: {exc}") from exc
    finally:
        consumer.close()


def topic_partitions(
    bootstrap_servers: str, topics: Iterable[str], *, timeout_s: float = 10.0
) -> dict[str, int]:
    """Partition count of each existing topic among `topics` (missing ones are left out).

    Existence is checked against the full topic list first, so asking never
    auto-creates a topic.
    """
    consumer = _metadata_consumer(bootstrap_servers, timeout_s)
    try:
        return _partitions(consumer, topics, bootstrap_servers)
    finally:
        consumer.close()


def _partitions(consumer: KafkaConsumer, topics: Iterable[str], where: str) -> dict[str, int]:
    try:
        existing = set(consumer.topics())  # fresh metadata for all topics
        return {t: len(consumer.partitions_for_topic(t) or ()) for t in topics if t in existing}
    except _UNREACHABLE as exc:
        raise ServiceUnavailable(f"Kafka at {where} is unreachable: {exc}") from exc


def ensure_topics(
    bootstrap_servers: str,
    topics: Mapping[str, int] | Iterable[str],
    partitions: int = 1,
    *,
    replication_factor: int = 1,
    configs: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
    require_partitions: bool = True,
) -> dict[str, int]:
    """Create each topic unless it exists; wait until all are visible in metadata.

    `topics` is a list of names (each gets `partitions`) or a mapping name -> partitions.
    Returns the actual partition count per topic. With `require_partitions`, a topic
    that already exists with another count (e.g. auto-created by Tansu with 4) raises
    ConfigError rather than being used silently. An unreachable broker raises
    ServiceUnavailable; a refused request (bad replication factor, policy) ConfigError.
    """
    wanted = dict(topics) if isinstance(topics, Mapping) else dict.fromkeys(topics, partitions)
    for name, count in wanted.items():
        if count < 1:
            raise ConfigError(f"topic {name!r}: partitions must be >= 1, got {count}")
    if not wanted:
        return {}

    admin_kwargs = _client_kwargs(KafkaAdminClient, bootstrap_servers, timeout_s)
    try:
        admin = KafkaAdminClient(**admin_kwargs)
    except _UNREACHABLE as exc:
        raise ServiceUnavailable(f"Kafka at {bootstrap_servers} is unreachable: {exc}") from exc
    try:
        for name, count in wanted.items():
            # One request per topic: an "already exists" answer for one topic then
            # cannot hide a real error for another.
            new = NewTopic(name, count, replication_factor, topic_configs=dict(configs or {}))
            try:
                admin.create_topics([new], timeout_ms=int(timeout_s * 1000))
            except TopicAlreadyExistsError:
                pass
            except _UNREACHABLE as exc:
                raise ServiceUnavailable(f"creating topic {name!r} timed out: {exc}") from exc
            except KafkaError as exc:
                raise ConfigError(f"the broker refused to create topic {name!r}: {exc}") from exc
    finally:
        admin.close()

    actual = _wait_visible(bootstrap_servers, wanted, timeout_s)
    if require_partitions:
        wrong = {t: (actual[t], n) for t, n in wanted.items() if actual[t] != n}
        if wrong:
            detail = ", ".join(f"{t} has {a} (want {n})" for t, (a, n) in wrong.items())
            raise ConfigError(
                f"topics exist with other partition counts: {detail}. Delete and recreate "
                "them (on the embedded broker: restart it), or configure the same count."
            )
    return actual


def _wait_visible(
    bootstrap_servers: str, wanted: Mapping[str, int], timeout_s: float
) -> dict[str, int]:
    """Poll metadata until every topic shows up (Kafka propagates new topics lazily)."""
    deadline = time.monotonic() + timeout_s
    consumer = _metadata_consumer(bootstrap_servers, timeout_s)
    try:
        while True:
            actual = _partitions(consumer, wanted, bootstrap_servers)
            missing = [t for t in wanted if actual.get(t, 0) < 1]
            if not missing:
                return actual
            if time.monotonic() >= deadline:
                raise ServiceUnavailable(
                    f"topics created but not visible after {timeout_s:.0f}s: " + ", ".join(missing)
                )
            time.sleep(0.2)
    finally:
        consumer.close()


PRODUCER_MAX_REQUEST_BYTES = 8 * 1024 * 1024
"""The largest record a stream worker writes (handover envelopes, table values)."""

TOPIC_CONFIGS = {"max.message.bytes": str(PRODUCER_MAX_REQUEST_BYTES + 64 * 1024)}
"""Configs of every topic the product creates, changelogs included. Apache Kafka's
broker default `message.max.bytes` is ~1 MiB: measured with two workers on a 200k-event
backlog, an alert-state value past it was refused (MessageSizeTooLargeError) and the
worker stopped; the topic setting lets the worker's 8 MiB through."""

CHANGELOG_TOPIC_CONFIGS = {**TOPIC_CONFIGS, "cleanup.policy": "compact"}
"""A worker table's changelog: compacted, so a key's last value is kept however old."""


def ensure_journey_topics(kafka: KafkaConfig, *, timeout_s: float = 30.0) -> dict[str, int]:
    """Create every topic the product uses (KafkaConfig.all_topics()) with its settings
    (TOPIC_CONFIGS); existing topics are left as they are."""
    return ensure_topics(
        kafka.bootstrap_servers,
        kafka.all_topics(),
        kafka.partitions,
        replication_factor=kafka.replication_factor,
        configs=TOPIC_CONFIGS,
        timeout_s=timeout_s,
    )


def config_drift(bootstrap_servers: str, wanted: Mapping[str, Mapping[str, str]], *,
                 timeout_s: float = 30.0) -> dict[str, dict[str, tuple[str | None, str]]]:
    """Existing topics whose configs fall short of `wanted` (topic -> {key: value}):
    topic -> {key: (current, wanted)}. `max.message.bytes` falls short when smaller;
    any other key when different. A broker that does not describe configs (Tansu
    answers nothing) reports nothing."""
    admin = KafkaAdminClient(**_client_kwargs(KafkaAdminClient, bootstrap_servers, timeout_s))
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, t) for t in wanted]
        described = admin.describe_configs(resources, config_filter="all").get("topic", {})
    except _UNREACHABLE as exc:
        raise ServiceUnavailable(f"Kafka at {bootstrap_servers} is unreachable: {exc}") from exc
    finally:
        admin.close()
    drift: dict[str, dict[str, tuple[str | None, str]]] = {}
    for topic, entries in described.items():
        if not entries:
            continue
        for key, want in wanted.get(topic, {}).items():
            raw = entries.get(key)
            have = None if raw is None else str(raw["value"] if isinstance(raw, dict) else raw)
            short = (have is None or int(have) < int(want)) if key == "max.message.bytes" \
                else have != want
            if short:
                drift.setdefault(topic, {})[key] = (have, want)
    return drift


def alter_configs(bootstrap_servers: str, changes: Mapping[str, Mapping[str, str]], *,
                  timeout_s: float = 30.0) -> None:
    """Set topic configs (incrementally: other keys keep their values)."""
    admin = KafkaAdminClient(**_client_kwargs(KafkaAdminClient, bootstrap_servers, timeout_s))
    try:
        admin.alter_configs([
            ConfigResource(ConfigResourceType.TOPIC, topic,
                           configs={k: (AlterConfigOp.SET, v) for k, v in kv.items()})
            for topic, kv in changes.items()])
    except KafkaError as exc:
        raise ConfigError(f"the broker refused to change topic configs: {exc}") from exc
    finally:
        admin.close()
