"""The topics a stream worker creates on Apache Kafka: record size and compaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from typer.testing import CliRunner

from deploy.cli import _register
from deploy.cli import app as cli
from journeys import envvars
from journeys.settings import KafkaConfig, WorkerSettings
from journeys.topics import PRODUCER_MAX_REQUEST_BYTES, ensure_topics
from stream.agents.app import create_app


def _configs(servers: str, topics: list[str]) -> dict[str, dict[str, str]]:
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        got = admin.describe_configs(resources, config_filter="all")["topic"]
        return {name: {key: str(c["value"] if isinstance(c, dict) else c)
                       for key, c in entries.items()} for name, entries in got.items()}
    finally:
        admin.close()


def test_changelogs_are_compacted_and_every_topic_takes_the_workers_records(
    kafka_broker: Any, unique_name: Callable[[str], str],
) -> None:
    """Measured before: an alert-state value over Apache Kafka's ~1 MiB default stopped a
    worker; and changelogs were created with the delete policy, so state older than the
    retention would have been lost on recovery."""
    kafka = KafkaConfig(bootstrap_servers=kafka_broker.bootstrap_servers,
                        topic_prefix=unique_name("tp"), partitions=2)
    app = create_app(WorkerSettings.build(kafka=kafka, app_id=unique_name("tpw")))
    app.ensure_topics()
    changelogs = [t.changelog_topic.get_topic_name() for t in app.tables.values()]
    data = list(kafka.all_topics())
    got = _configs(kafka.bootstrap_servers, [*data, *changelogs])
    assert len(changelogs) == 3
    for topic in [*data, *changelogs]:
        assert int(got[topic]["max.message.bytes"]) > PRODUCER_MAX_REQUEST_BYTES, topic
    assert {got[t]["cleanup.policy"] for t in changelogs} == {"compact"}
    assert {got[t]["cleanup.policy"] for t in data} == {"delete"}


def test_journeys_topics_creates_checks_and_alters(
    kafka_broker: Any, unique_name: Callable[[str], str],
) -> None:
    """`journeys topics`: a changelog created by hand with the broker's defaults is
    reported (exit 1) until `--alter` sets it; running it again changes nothing."""
    _register()
    prefix, app_id = unique_name("jt"), unique_name("jtw")
    servers = kafka_broker.bootstrap_servers
    env = {envvars.KAFKA_BOOTSTRAP_SERVERS: servers, envvars.KAFKA_TOPIC_PREFIX: prefix,
           envvars.KAFKA_PARTITIONS: "2", envvars.WORKER_APP_ID: app_id}
    stale = f"{app_id}-customer-state-changelog"
    ensure_topics(servers, [stale], 2)  # the broker's defaults: delete, ~1 MiB
    first = CliRunner().invoke(cli, ["topics"], env=env)
    assert first.exit_code == 1, first.output
    assert "1 existing topic(s) have configs that fall" in first.output
    fixed = CliRunner().invoke(cli, ["topics", "--alter"], env=env)
    assert fixed.exit_code == 0, fixed.output
    assert _configs(servers, [stale])[stale]["cleanup.policy"] == "compact"
    again = CliRunner().invoke(cli, ["topics"], env=env)
    assert again.exit_code == 0, again.output
