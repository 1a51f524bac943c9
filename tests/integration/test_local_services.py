"""The local service launchers against the real binaries: Tansu broker, Apache Kafka and
ClickHouse server."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from clickhouse_driver import Client
from kafka import KafkaConsumer, KafkaProducer

from deploy.local import broker as broker_module
from deploy.local import kafka as kafka_module
from deploy.local._proc import port_is_free, tcp_connects
from deploy.local.broker import LocalBroker
from deploy.local.clickhouse import LocalClickHouse
from deploy.local.kafka import LocalKafka, broker_registered
from deploy.local.kafka_jars import KAFKA_VERSION, fetch_jars, jars_ready
from journeys.errors import ConfigError, LauncherError
from journeys.topics import ensure_topics, list_topics, topic_partitions

UniqueName = Callable[[str], str]


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _listening_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


# -- harness -------------------------------------------------------------------------


def test_names_are_valid_everywhere(run_id: str, unique_name: UniqueName) -> None:
    a, b = unique_name("db"), unique_name("db")
    assert a != b and run_id in a
    for name in (a, b, run_id):
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name)  # ClickHouse identifier


def test_chdb_path_is_one_directory(chdb_path: Path) -> None:
    assert chdb_path.is_dir()


# -- broker --------------------------------------------------------------------------


def test_broker_is_up(tansu_broker: LocalBroker) -> None:
    assert tansu_broker.running and tansu_broker.pid
    host, port = tansu_broker.bootstrap_servers.split(":")
    assert host == "127.0.0.1" and int(port) == tansu_broker.port
    assert tcp_connects(host, int(port))


def test_topics_are_created_with_their_partition_counts(
    tansu_broker: LocalBroker, unique_name: UniqueName
) -> None:
    wide, narrow = unique_name("wide"), unique_name("narrow")
    got = ensure_topics(tansu_broker.bootstrap_servers, {wide: 6, narrow: 1})
    assert got == {wide: 6, narrow: 1}

    consumer = KafkaConsumer(bootstrap_servers=tansu_broker.bootstrap_servers)
    try:
        assert consumer.partitions_for_topic(wide) == set(range(6))
        assert consumer.partitions_for_topic(narrow) == {0}
    finally:
        consumer.close()

    # Idempotent; a different count for an existing topic is refused, not ignored.
    assert ensure_topics(tansu_broker.bootstrap_servers, [wide], 6) == {wide: 6}
    with pytest.raises(ConfigError, match="partition counts"):
        ensure_topics(tansu_broker.bootstrap_servers, [wide], 3)
    assert {wide, narrow} <= list_topics(tansu_broker.bootstrap_servers)


def test_asking_for_partitions_does_not_create_topics(
    tansu_broker: LocalBroker, unique_name: UniqueName
) -> None:
    ghost = unique_name("ghost")
    assert topic_partitions(tansu_broker.bootstrap_servers, [ghost]) == {}
    assert ghost not in list_topics(tansu_broker.bootstrap_servers)


def test_keyed_produce_consume_round_trip(tansu_broker: LocalBroker, unique_name: UniqueName) -> None:
    topic = unique_name("roundtrip")
    ensure_topics(tansu_broker.bootstrap_servers, [topic], 3)
    keys = [f"customer-{i}".encode() for i in range(5)]
    sent = [(keys[i % 5], f"event-{i}".encode()) for i in range(50)]

    producer = KafkaProducer(bootstrap_servers=tansu_broker.bootstrap_servers, acks="all")
    try:
        for key, value in sent:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=tansu_broker.bootstrap_servers,
        group_id=unique_name("group"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        # The group join takes about half the session timeout on Tansu: keep it short.
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
        consumer_timeout_ms=30_000,
    )
    received: list[tuple[bytes, bytes, int]] = []
    try:
        for msg in consumer:
            received.append((msg.key, msg.value, msg.partition))
            if len(received) == len(sent):
                break
    finally:
        consumer.close()

    assert len(received) == len(sent)
    assert sorted((k, v) for k, v, _ in received) == sorted(sent)
    partitions_by_key: dict[bytes, set[int]] = {}
    for key, _, partition in received:
        partitions_by_key.setdefault(key, set()).add(partition)
    assert all(len(p) == 1 for p in partitions_by_key.values())  # a key stays on one partition
    for key in keys:  # and keeps its order
        assert [v for k, v, _ in received if k == key] == [v for k, v in sent if k == key]


def test_busy_port_is_refused() -> None:
    with _listening_socket() as s:
        port = s.getsockname()[1]
        with pytest.raises(LauncherError, match="already in use"):
            LocalBroker(port=port).start()


def test_early_exit_is_reported_with_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tansu exits 0 after a bind panic; the launcher must notice and show the log."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: nothing answers a connect
        port = s.getsockname()[1]
        monkeypatch.setattr(broker_module, "port_is_free", lambda port, host="": True)
        with pytest.raises(LauncherError, match="exited with code 0") as info:
            LocalBroker(port=port, start_timeout=10).start()
    assert "Address in use" in str(info.value) or "AddrInUse" in str(info.value)


def test_stop_ends_the_process_and_restart_keeps_the_port(tmp_path: Path) -> None:
    b = LocalBroker(workdir=tmp_path / "tansu_broker")
    b.start()
    pid, port = b.pid, b.port
    assert pid is not None
    b.stop()
    assert not b.running and _process_gone(pid)
    assert not tcp_connects("127.0.0.1", port)
    assert (tmp_path / "tansu_broker" / "tansu.log").exists()  # a given work dir is kept
    with b:
        assert b.port == port and b.pid != pid
        assert tcp_connects("127.0.0.1", port)
    assert b.stop() is None  # idempotent


def test_temp_workdir_is_removed() -> None:
    with LocalBroker() as b:
        log = b.log_path
        assert log is not None and log.exists()
    assert not log.parent.exists()


# -- Apache Kafka --------------------------------------------------------------------


def _kafka_config(k: LocalKafka) -> dict[str, str]:
    assert k.log_path is not None
    lines = (k.log_path.parent / "server.properties").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _kafka_python_round_trip(bootstrap: str, topic: str, group: str, n: int) -> list[tuple[bytes, bytes]]:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for i in range(n):
            producer.send(topic, key=f"k{i % 3}".encode(), value=f"v{i}".encode())
        producer.flush(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=30_000,
    )
    try:
        got: list[tuple[bytes, bytes]] = []
        for msg in consumer:
            got.append((msg.key, msg.value))
            if len(got) == n:
                break
        return got
    finally:
        consumer.close()


def test_kafka_is_up_and_listens_on_localhost_only(kafka_broker: LocalKafka) -> None:
    assert kafka_broker.running and kafka_broker.pid
    assert kafka_broker.bootstrap_servers == f"127.0.0.1:{kafka_broker.port}"
    # Ready means a Kafka client sees the broker registered, not just an open port.
    assert broker_registered(kafka_broker.bootstrap_servers, kafka_broker.port)
    config = _kafka_config(kafka_broker)
    assert config["process.roles"] == "broker,controller"
    assert config["auto.create.topics.enable"] == "false"
    listeners = config["listeners"].split(",")
    assert len(listeners) == 2 and all("//127.0.0.1:" in url for url in listeners)
    assert "LocalKafka(port=" in repr(kafka_broker)


def test_kafka_round_trip_with_kafka_python(
    kafka_broker: LocalKafka, unique_name: UniqueName
) -> None:
    topic = unique_name("kp")
    assert ensure_topics(kafka_broker.bootstrap_servers, [topic], 3) == {topic: 3}
    got = _kafka_python_round_trip(kafka_broker.bootstrap_servers, topic, unique_name("g"), 30)
    assert sorted(got) == sorted((f"k{i % 3}".encode(), f"v{i}".encode()) for i in range(30))
    # Topics are never auto-created: asking for an unknown one leaves it unknown.
    ghost = unique_name("ghost")
    assert topic_partitions(kafka_broker.bootstrap_servers, [ghost]) == {}
    assert ghost not in list_topics(kafka_broker.bootstrap_servers)


def test_kafka_round_trip_with_aiokafka(kafka_broker: LocalKafka, unique_name: UniqueName) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = unique_name("aio")
    ensure_topics(kafka_broker.bootstrap_servers, [topic], 2)
    sent = [(f"k{i % 4}".encode(), f"v{i}".encode()) for i in range(40)]

    async def run() -> list[tuple[bytes, bytes]]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
        await producer.start()
        try:
            for key, value in sent:
                await producer.send(topic, key=key, value=value)
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_broker.bootstrap_servers,
            group_id=unique_name("g"),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        got: list[tuple[bytes, bytes]] = []
        try:
            async with asyncio.timeout(30):
                async for msg in consumer:
                    assert msg.key is not None and msg.value is not None
                    got.append((msg.key, msg.value))
                    if len(got) == len(sent):
                        break
        finally:
            await consumer.stop()
        return got

    assert sorted(asyncio.run(run())) == sorted(sent)


def test_kafka_busy_port_is_refused() -> None:
    with _listening_socket() as s:
        port = s.getsockname()[1]
        with pytest.raises(LauncherError, match="already in use"):
            LocalKafka(port=port).start()


def test_kafka_early_exit_is_reported_with_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """A JVM that dies during start-up (here: its port is taken) is an error with the log."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: nothing answers a connect
        port = s.getsockname()[1]
        monkeypatch.setattr(kafka_module, "port_is_free", lambda port, host="": True)
        with pytest.raises(LauncherError, match="exited with code") as info:
            LocalKafka(port=port).start()
    assert "Address already in use" in str(info.value)


def test_kafka_stop_by_pid_and_restart_on_the_same_port(
    tmp_path: Path, unique_name: UniqueName
) -> None:
    k = LocalKafka(workdir=tmp_path / "kafka")
    k.start()
    pid, port = k.pid, k.port
    assert pid is not None
    topic = unique_name("kept")
    ensure_topics(k.bootstrap_servers, [topic], 1)
    _kafka_python_round_trip(k.bootstrap_servers, topic, unique_name("g"), 3)
    assert k.stop() is not None
    assert not k.running and _process_gone(pid)
    assert not tcp_connects("127.0.0.1", port) and port_is_free(port)
    assert (tmp_path / "kafka" / "kafka.log").exists()  # a given work dir is kept
    with k:
        assert k.port == port and k.pid != pid
        # A given work dir keeps the data: the topic and its records are still there.
        assert topic_partitions(k.bootstrap_servers, [topic]) == {topic: 1}
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=k.bootstrap_servers,
            auto_offset_reset="earliest",
            consumer_timeout_ms=20_000,
        )
        try:
            values = [msg.value for _, msg in zip(range(3), consumer, strict=False)]
        finally:
            consumer.close()
        assert values == [b"v0", b"v1", b"v2"]
    assert k.stop() is None  # idempotent


def test_kafka_temp_workdir_is_removed() -> None:
    with LocalKafka() as k:
        log = k.log_path
        assert log is not None and log.exists()
    assert not log.parent.exists()


def test_kafka_missing_tools_say_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(LauncherError, match="apt-get install maven default-jre-headless"):
        LocalKafka(java=tmp_path / "no-java").start()
    with pytest.raises(LauncherError, match="apt-get install maven default-jre-headless"):
        fetch_jars(tmp_path / "jars", mvn=tmp_path / "no-mvn")


def test_kafka_partial_jar_cache_is_not_complete(tmp_path: Path) -> None:
    jars = tmp_path / "jars"
    jars.mkdir()
    (jars / f"kafka_2.13-{KAFKA_VERSION}.jar").write_bytes(b"")
    assert not jars_ready(tmp_path)  # no marker: an interrupted download
    (tmp_path / ".complete").write_text("3.0.0\n")
    assert not jars_ready(tmp_path)  # a marker for another version
    (tmp_path / ".complete").write_text(f"{KAFKA_VERSION}\n")
    assert jars_ready(tmp_path)


# -- ClickHouse server ---------------------------------------------------------------


def test_clickhouse_answers_queries(
    clickhouse_server: LocalClickHouse, unique_name: UniqueName
) -> None:
    client = Client(clickhouse_server.host, port=clickhouse_server.tcp_port)
    try:
        [(version, tz)] = client.execute("SELECT version(), timezone()")
        assert version and "UTC" in tz
        db = unique_name("db")
        client.execute(f"CREATE DATABASE {db}")
        client.execute(f"CREATE TABLE {db}.t (k String, n UInt32) ENGINE = MergeTree ORDER BY k")
        client.execute(f"INSERT INTO {db}.t (k, n) VALUES", [("a", 1), ("b", 2), ("a", 3)])
        rows = client.execute(
            f"SELECT k, sum(n) FROM {db}.t WHERE k = %(k)s GROUP BY k", {"k": "a"}
        )
        assert rows == [("a", 4)]
        client.execute(f"DROP DATABASE {db}")
    finally:
        client.disconnect()


def test_clickhouse_listens_on_localhost_only(clickhouse_server: LocalClickHouse) -> None:
    config = (clickhouse_server.workdir or Path()) / "config.xml"
    assert "<listen_host>127.0.0.1</listen_host>" in config.read_text()
    assert clickhouse_server.host == "127.0.0.1"


def test_clickhouse_stop_ends_the_process() -> None:
    server = LocalClickHouse().start()
    pid, http_port, workdir = server.pid, server.http_port, server.workdir
    assert pid is not None and workdir is not None
    client = Client(server.host, port=server.tcp_port)
    assert client.execute("SELECT 1") == [(1,)]  # left connected on purpose
    server.stop()
    assert not server.running and _process_gone(pid)
    assert port_is_free(http_port)
    assert not workdir.exists()
    client.disconnect()


def test_clickhouse_missing_binary_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(LauncherError, match="apt-get install -y clickhouse-server"):
        LocalClickHouse(binary=tmp_path / "no-such-clickhouse").start()


def test_clickhouse_busy_port_is_refused() -> None:
    with _listening_socket() as s:
        port = s.getsockname()[1]
        with pytest.raises(LauncherError, match="already in use"):
            LocalClickHouse(tcp_port=port).start()


def test_children_die_with_a_parent_killed_outright(tmp_path: Path) -> None:
    """A process SIGKILLed can run no cleanup: its broker child must still stop (Linux
    parent-death signal), not keep answering with nothing behind it."""
    script = ("import time, sys; from deploy.local.broker import LocalBroker; "
              "b = LocalBroker(); b.start(); print(b.pid, flush=True); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              cwd=Path(__file__).resolve().parents[2])
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        os.kill(child, 0)  # running
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not _alive(child):
                return
            time.sleep(0.1)
        os.kill(child, signal.SIGKILL)
        raise AssertionError(f"the broker child {child} outlived its SIGKILLed parent")
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for init to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
