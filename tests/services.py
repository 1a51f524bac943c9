"""Fixtures for tests that need real services (tests/integration, tests/faults): the
embedded broker, Apache Kafka, a ClickHouse server, chdb. A pytest plugin of the root
conftest, so both folders share one set of services per session.

Services are session-scoped (started once per pytest process). A service that cannot
start makes the fixture raise, so its tests ERROR: CI must never skip them silently.
Isolation between tests comes from unique names (topics, databases, group ids), not
from fresh services.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from deploy.local.broker import LocalBroker
from deploy.local.clickhouse import LocalClickHouse
from deploy.local.kafka import LocalKafka
from journeys.errors import LauncherError

_SERVICE_DIRS = tuple((Path(__file__).parent / d).resolve() for d in ("integration", "faults"))
_COUNTER = itertools.count(1)
_Service = TypeVar("_Service", LocalBroker, LocalClickHouse, LocalKafka)


def _start_or_fail(service: _Service, what: str) -> _Service:
    """Start a service or fail the fixture (dependent tests ERROR; never a skip)."""
    try:
        service.start()
    except LauncherError as exc:
        message = f"{what} did not start: {exc}"
    else:
        return service
    pytest.fail(message, pytrace=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration and tests/faults with `integration`
    (select: -m integration) and every test that uses the `broker` fixture with `broker`
    (scripts/test.sh runs those a second time on Tansu: -m broker with
    JOURNEYS_TEST_BROKER=tansu)."""
    for item in items:
        if any(d in Path(item.path).resolve().parents for d in _SERVICE_DIRS):
            item.add_marker(pytest.mark.integration)
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)


@pytest.fixture(scope="session")
def run_id() -> str:
    """Short id unique to this pytest run: use it in topic prefixes, databases, group ids.

    Lowercase letter + hex, so it is valid in Kafka topic names and ClickHouse
    identifiers alike.
    """
    return "r" + secrets.token_hex(3)


@pytest.fixture
def unique_name(run_id: str) -> Callable[[str], str]:
    """Factory: `unique_name("orders")` -> "orders_r1a2b3c_7", unique within the run.

    Safe as a topic name, topic prefix, consumer group id and ClickHouse database name.
    Use a fresh consumer group per test: on the embedded broker a group can get stuck.
    """

    def make(prefix: str = "t") -> str:
        return f"{prefix}_{run_id}_{next(_COUNTER)}"

    return make


BROKER_ENV = "JOURNEYS_TEST_BROKER"  # kafka (default) | tansu: what `broker` starts


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker | LocalKafka]:
    """The broker the pipeline's integration tests run on: Apache Kafka (the production
    broker) unless JOURNEYS_TEST_BROKER=tansu (the embedded one; scripts/test.sh runs
    the stream tests on both). Create topics explicitly (journeys.topics.ensure_topics)."""
    choice = os.environ.get(BROKER_ENV, "kafka").strip().lower()
    if choice not in ("kafka", "tansu"):
        pytest.fail(f"{BROKER_ENV}={choice!r}: use kafka or tansu", pytrace=False)
    b: LocalBroker | LocalKafka = _start_or_fail(
        LocalKafka() if choice == "kafka" else LocalBroker(),
        "the Apache Kafka broker" if choice == "kafka" else "the embedded broker")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def tansu_broker() -> Iterator[LocalBroker]:
    """One embedded Tansu broker for the session (the launcher's own tests). Unknown
    topics get 4 partitions: create them explicitly."""
    b = _start_or_fail(LocalBroker(), "the embedded broker")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[LocalKafka]:
    """One Apache Kafka 4.x broker (KRaft, single node) for the session.

    Its jars come from Maven Central (fetched on first use; scripts/test.sh fetches them
    up front). Topics are not auto-created: create them (journeys.topics.ensure_topics).
    """
    k = _start_or_fail(LocalKafka(), "the Apache Kafka broker")
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="session")
def clickhouse_server() -> Iterator[LocalClickHouse]:
    """One ClickHouse server (Debian clickhouse-server 18.16) for the session.

    Connect with clickhouse_driver.Client(clickhouse_server.host,
    port=clickhouse_server.tcp_port); use a unique database per test.
    """
    server = _start_or_fail(LocalClickHouse(), "the ClickHouse server")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """THE chdb data directory of this pytest process.

    chdb allows one data path per OS process, so every chdb use in the test process
    must pass this path; isolate tests with unique database names (unique_name).
    """
    return tmp_path_factory.mktemp("chdb", numbered=False)
