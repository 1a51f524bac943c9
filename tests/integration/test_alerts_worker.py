"""Drop-off alerts through the real worker: generated traffic with a payment incident on
one channel goes to the raw topic of a real broker, a `python -m stream` subprocess
processes it (validate -> identity -> customers -> step-reached -> alerts) into a real
ClickHouse server, and a webhook receiver on 127.0.0.1 must get exactly the alerts the
batch reference computes: the incident's windows on its channel and in total, its
recovery, nothing for the calm hours before and after.

Traffic arrives as it would live: in event-time slices no longer than the allowed
lateness, each processed before the next, so that the idle clock and the restart act
on a live stream. (A bulk load of hours at once is
tests/integration/test_stream_backfill.py.)

The receiver is down while the incident fires (deliveries retried, spooled), the worker
is SIGKILLed mid-stream and restarted (alert state from the changelog: the recovery
notice must still name the alert it resolves), the receiver comes back flaky (503
twice), and the recovery window is finalized by the idle clock alone (no data after
it) — every alert arrives, each once, signed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from deploy.local.broker import LocalBroker
from deploy.local.clickhouse import LocalClickHouse
from journeys.settings import KafkaConfig, WarehouseConfig
from journeys.topics import ensure_journey_topics
from stream.engine.alert_verdict import alert_id
from tests.integration.alerts_support import (
    HOUR,
    ThreadedReceiver,
    Traffic,
    incident_traffic,
    occurred_ms,
    produce_events,
)
from tests.integration.ingest_support import broker_worker_settings, read_topic
from tests.integration.stream_support import (
    start_worker,
    state_store_setting,
    stop_worker,
    wait_pipeline,
)
from warehouse.connect import connect
from warehouse.queries import alerts as alerts_query

# Kafka only in scripts/test.sh (CI budget): the alert path on Tansu (the demo's) runs
# in test_alerts_e2e.py.
pytestmark = pytest.mark.kafka_only


SECRET = "worker-integration-secret"
PARTITIONS = 3
LATENESS_MS = HOUR  # and slices of at most this much event time


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    t = incident_traffic(hours=11, incident_at_h=6, incident_h=2)
    assert len(t.raw) > 30_000  # 900 visitors/h: the default rule's min_volume on one channel
    return t


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def env(broker: LocalBroker, clickhouse_server: LocalClickHouse,
        unique_name: Callable[[str], str], tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_")}
    port = _free_port()  # nobody listens here until the test starts the receiver
    env.update({
        **broker_worker_settings(),
        **state_store_setting(),
        "JOURNEYS_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "JOURNEYS_KAFKA__TOPIC_PREFIX": unique_name("alertw"),
        "JOURNEYS_KAFKA__PARTITIONS": str(PARTITIONS),
        "JOURNEYS_WAREHOUSE__BACKEND": "server",
        "JOURNEYS_WAREHOUSE__HOST": clickhouse_server.host,
        "JOURNEYS_WAREHOUSE__PORT": str(clickhouse_server.tcp_port),
        "JOURNEYS_WAREHOUSE__DATABASE": unique_name("alertw"),
        "JOURNEYS_APP_ID": unique_name("alertw"),
        "JOURNEYS_DATA_DIR": str(tmp_path / "data"),
        "JOURNEYS_FLUSH_INTERVAL_S": "0.3",
        "JOURNEYS_ALLOWED_LATENESS_MS": str(LATENESS_MS),
        "JOURNEYS_ALERTING__WEBHOOK_URLS": f"http://127.0.0.1:{port}/generic",
        "JOURNEYS_ALERTING__SLACK_WEBHOOK_URLS": f"http://127.0.0.1:{port}/slack",
        "JOURNEYS_ALERTING__SIGNING_SECRET": SECRET,
        "JOURNEYS_ALERTING__MAX_ATTEMPTS": "100",
        "JOURNEYS_ALERTING__BACKOFF_INITIAL_S": "0.05",
        "JOURNEYS_ALERTING__BACKOFF_MAX_S": "0.5",
        "RECEIVER_PORT": str(port),
    })
    return env


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    try:
        yield procs
    finally:
        for p in procs:
            stop_worker(p)


def _kafka(env: dict[str, str]) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=env["JOURNEYS_KAFKA__BOOTSTRAP_SERVERS"],
                       topic_prefix=env["JOURNEYS_KAFKA__TOPIC_PREFIX"], partitions=PARTITIONS)


def _warehouse(env: dict[str, str]) -> Any:
    return connect(WarehouseConfig(backend="server", host=env["JOURNEYS_WAREHOUSE__HOST"],
                                   port=int(env["JOURNEYS_WAREHOUSE__PORT"]),
                                   database=env["JOURNEYS_WAREHOUSE__DATABASE"]),
                   create_database=False)


def _stored(env: dict[str, str]) -> dict[str, str]:
    try:
        wh = _warehouse(env)
    except Exception:  # the worker has not created the database yet
        return {}
    try:
        rows, _total = alerts_query.run(wh, limit=1000)
        return {r.alert_id: r.kind for r in rows}
    except Exception:
        return {}
    finally:
        wh.close()


def _wait_stored(env: dict[str, str], want: set[str], proc: subprocess.Popen, log: Path,
                 timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not want <= set(_stored(env)):
        assert proc.poll() is None, f"worker exited:\n{log.read_text()[-4000:]}"
        if time.monotonic() > deadline:
            pytest.fail(f"alerts {sorted(want)} not stored after {timeout}s:\n"
                        f"{log.read_text()[-4000:]}")
        time.sleep(0.3)


def _kind(r: Any) -> str:
    return str(orjson.loads(r.body)["alert"]["kind"]) if r.path == "/generic" else (
        r.headers.get("X-Journeys-Alert-Kind", ""))


def _feed(kafka: KafkaConfig, env: dict[str, str], events: list[dict[str, Any]],
          until_ms: int, proc: subprocess.Popen, log: Path, *, wait: bool = True) -> int:
    """Produce the events before `until_ms` not produced yet, a lateness-long slice at a
    time, each processed by every stage before the next; returns how many were sent."""
    sent = 0
    while sent < len(events) and occurred_ms(events[sent]) < until_ms:
        stop = min(occurred_ms(events[sent]) + LATENESS_MS, until_ms)
        end = next((i for i in range(sent, len(events)) if occurred_ms(events[i]) >= stop),
                   len(events))
        produce_events(kafka.bootstrap_servers, kafka.raw_topic, events[sent:end])
        sent = end
        if wait:
            wait_pipeline(kafka, env["JOURNEYS_APP_ID"], [proc], log, timeout=120)
    return sent


@pytest.mark.timeout(900)
def test_incident_alerts_through_the_worker(traffic: Traffic, env: dict[str, str],
                                            workers: list[subprocess.Popen],
                                            tmp_path: Path) -> None:
    kafka, log = _kafka(env), tmp_path / "worker.log"
    ensure_journey_topics(kafka)
    expected = traffic.expected_ids(streamed=True)
    fired = {aid for aid, kind in expected.items() if kind == "fired"}
    assert len(fired) == 4 and len(expected) == 6  # 2 windows x (app, all) + 2 recoveries
    lo, hi = traffic.incident
    rule_delay = HOUR + HOUR // 2 + LATENESS_MS  # window + horizon + lateness
    events = sorted(traffic.raw, key=occurred_ms)

    # Until both incident windows are final (they fire) and the recovery window is not,
    # with the receiver down: connection refused, retried with backoff, spooled.
    workers.append(start_worker(env, log))
    done = _feed(kafka, env, events, hi - HOUR + rule_delay + HOUR // 2, workers[0], log)
    _wait_stored(env, fired, workers[0], log)
    assert set(_stored(env)) == fired

    # SIGKILL while a slice is being processed (still before the recovery is final).
    done += _feed(kafka, env, events[done:], hi + rule_delay - 60_000, workers[0], log,
                  wait=False)
    time.sleep(0.5)
    workers[0].kill()
    workers[0].wait(10)
    spooled = list((Path(env["JOURNEYS_DATA_DIR"]) / "alert-spool").rglob("*.json"))
    assert len(spooled) == 2 * len(fired)  # generic + slack, none delivered yet

    receiver = ThreadedReceiver(SECRET.encode(), port=int(env["RECEIVER_PORT"]),
                                fail_first=2).start()
    try:
        workers.append(start_worker(env, log))
        # Then the stream goes quiet seconds before the recovery window becomes final:
        # no more data, only the idle clock (wall time after 1 s without input, reported
        # by the timer) can finalize it.
        done += _feed(kafka, env, events[done:], hi + rule_delay - 5_000, workers[1], log)
        receiver.wait_until(lambda r: sum(_kind(x) == "recovered" for x in r) == 4, 180,
                            "the recovery notices while the stream is idle")
        _feed(kafka, env, events[done:], 2**62, workers[1], log)
        got = receiver.wait_until(lambda r: len(r) >= 2 * len(expected), 60,
                                  "every alert on both receivers")
        time.sleep(1.0)  # anything extra would be on its way by now
        got = receiver.received
    finally:
        receiver.stop()

    generic = [orjson.loads(r.body) for r in got if r.path == "/generic"]
    slack = [r for r in got if r.path == "/slack"]
    delivered = {g["alert"]["alert_id"]: g["alert"]["kind"] for g in generic}
    assert delivered == expected and len(generic) == len(expected)  # exactly these, once each
    assert sorted(r.headers["X-Journeys-Alert-Id"] for r in slack) == sorted(expected)
    assert receiver.receiver.bad_signatures == 0 and receiver.receiver.rejected == 2

    # Nothing in calm periods; every incident window on its channel and in total.
    by_id = {g["alert"]["alert_id"]: g["alert"] for g in generic}
    for a in by_id.values():
        assert a["journey"] == "purchase" and a["step"] == traffic.step
        assert a["channel"] in (traffic.channel, "all")
        if a["kind"] == "fired":
            assert lo <= a["window_start_ms"] < hi
        else:  # state survived the SIGKILL: the notice names the last firing it closes
            assert a["window_start_ms"] == hi
            assert a["resolves"] == alert_id("purchase", traffic.step, a["channel"], hi - HOUR)
    for r in traffic.streamed:
        a = by_id[alert_id(r.journey, r.step, r.channel, r.window_start)]
        assert (a["population"], a["dropped"]) == (r.population, r.dropped)
        assert a["baseline"] == pytest.approx(r.baseline)

    assert _stored(env) == expected  # the warehouse: one row per alert
    messages = read_topic(kafka.bootstrap_servers, kafka.alerts_topic, expected=len(expected))
    assert {orjson.loads(m.value)["alert_id"] for m in messages} == set(expected)
    text = log.read_text()
    assert "retry" in text and "ConnectError" in text  # the receiver was down: retried
    assert not list((Path(env["JOURNEYS_DATA_DIR"]) / "alert-spool").rglob("*.json"))
