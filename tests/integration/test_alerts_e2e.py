"""Incident traffic -> evaluator -> warehouse + alerts topic + webhooks on 127.0.0.1.

Generated traffic (ingest.generator) has a payment incident on one channel; exactly the
alerts the batch reference computes must reach the receiver (signed), none for calm
windows; a receiver that is down gets the alerts once it is back, none lost.
Observations come from reference journeys, and in one test from stream.engine.journeys
driven like a worker (stitching is a naive batch link map in both: alerts_support).
The same through the real worker subprocess: test_alerts_worker.py.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from journeys.settings import WarehouseConfig
from journeys.topics import ensure_topics
from stream.agents.alerting.delivery import (
    DeadLetter,
    RetryPolicy,
    WebhookDispatcher,
    WebhookTarget,
)
from stream.agents.alerting.service import AlertSink
from stream.engine.dropoff import DropoffEvaluator
from tests.integration.alerts_support import (
    HOUR,
    Receiver,
    Traffic,
    engine_replay,
    incident_traffic,
    replay,
)
from warehouse.backend import Warehouse
from warehouse.connect import connect
from warehouse.queries import alerts as alerts_query
from warehouse.schema import migrate
from warehouse.writers_alerts import write_alerts

SECRET = b"integration-secret"
FAST = RetryPolicy(max_attempts=60, initial_s=0.05, max_s=0.2)


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    t = incident_traffic()
    assert len(t.observations) > 20_000  # a real day's worth, not a toy
    return t


@pytest.fixture(params=["server", "chdb"])
def wh(request: pytest.FixtureRequest, unique_name: Any) -> Iterator[Warehouse]:
    database = unique_name("alertse2e")
    if request.param == "server":
        server = request.getfixturevalue("clickhouse_server")
        config = WarehouseConfig(backend="server", host=server.host, port=server.tcp_port,
                                 database=database)
    else:
        path: Path = request.getfixturevalue("chdb_path")
        config = WarehouseConfig(backend="chdb", path=path, database=database)
    w = connect(config)
    try:
        migrate(w)
        yield w
    finally:
        w.execute(f"DROP DATABASE IF EXISTS {database}")
        w.close()


def test_expected_alerts_are_the_incident(traffic: Traffic) -> None:
    """What 'expected' means here, stated in domain terms (not only 'equals the reference')."""
    lo, hi = traffic.incident
    fired = [a for a in traffic.expected if a.kind == "fired"]
    assert {(a.journey, a.step) for a in traffic.expected} == {("purchase", traffic.step)}
    assert all(lo <= a.window_start < hi for a in fired)  # nothing in calm periods
    app_windows = {a.window_start for a in fired if a.channel == traffic.channel}
    assert app_windows == set(range(lo, hi, HOUR))  # every incident window, on its channel
    assert {a.channel for a in fired} <= {traffic.channel, "all"}  # other channels stay calm
    recovered = [a for a in traffic.expected if a.kind == "recovered"]
    assert {(a.channel, a.window_start) for a in recovered} >= {(traffic.channel, hi)}


def test_journey_engine_observations_give_the_same_alerts(traffic: Traffic) -> None:
    """stream.engine.journeys as the source of observations (batches, watermark, timers):
    the evaluator advanced to each watermark after the engine gives the reference alerts."""
    ev = DropoffEvaluator(traffic.definitions.journeys)
    got = []
    for wm, observed in engine_replay(traffic.definitions, traffic.events,
                                      traffic.final_watermark):
        assert all(ev.observe(o) for o in observed if ev.keys_for(o))
        got.extend(ev.advance(wm))
    assert {r.alert_id: r.kind for r in got} == traffic.expected_ids()
    assert ev.late == 0


def test_incident_reaches_webhooks_warehouse_and_topic(
    traffic: Traffic, wh: Warehouse, broker: Any, unique_name: Any
) -> None:
    topic = unique_name("alerts")
    ensure_topics(broker.bootstrap_servers, {topic: 1})
    letters: list[DeadLetter] = []

    async def go() -> tuple[Receiver, list[bytes]]:
        receiver = await Receiver(SECRET).start()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks=1)
        await producer.start()
        targets = [WebhookTarget(receiver.url("generic")),
                   WebhookTarget(receiver.url("slack"), "slack")]
        try:
            async with WebhookDispatcher(targets, letters.append, secret=SECRET,
                                         policy=FAST) as dispatcher:
                sink = AlertSink(store=lambda rows: write_alerts(wh, rows),
                                 publish=lambda k, v: producer.send_and_wait(topic, v, key=k),
                                 dispatcher=dispatcher)
                ev = DropoffEvaluator(traffic.definitions.journeys)
                half = len(traffic.observations) // 2
                for batch in replay(ev, traffic.observations[:half]):
                    await sink.emit(batch)
                restarted = DropoffEvaluator(traffic.definitions.journeys)  # a worker restart
                restarted.loads(ev.dumps())
                for batch in replay(restarted, traffic.observations[half:]):
                    await sink.emit(batch)
                await sink.emit(restarted.advance(traffic.final_watermark))
                await sink.emit(restarted.advance(traffic.final_watermark + 10 * HOUR))
                await dispatcher.join()
        finally:
            await producer.stop()
            await receiver.stop()
        return receiver, await _read_topic(broker.bootstrap_servers, topic)

    receiver, messages = asyncio.run(asyncio.wait_for(go(), 120))
    expected = traffic.expected_ids()
    generic = [r for r in receiver.received if r.path == "/generic"]
    slack = [r for r in receiver.received if r.path == "/slack"]
    got = {orjson.loads(r.body)["alert"]["alert_id"]: orjson.loads(r.body)["alert"]["kind"]
           for r in generic}
    assert got == expected and len(generic) == len(expected)  # exactly these, each once
    assert receiver.bad_signatures == 0 and letters == []
    assert {r.headers["X-Journeys-Alert-Id"] for r in slack} == set(expected)
    assert all({"text", "blocks"} <= set(orjson.loads(r.body)) for r in slack)
    rows, total = alerts_query.run(wh, limit=1000)
    assert total == len(expected) and {r.alert_id: r.kind for r in rows} == expected
    assert {orjson.loads(m)["alert_id"] for m in messages} == set(expected)


async def _read_topic(bootstrap: str, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        out: list[bytes] = []
        for _ in range(20):
            batch = await consumer.getmany(tp, timeout_ms=500)
            got = [m.value for m in batch.get(tp, [])]
            out.extend(got)
            if not got and out:
                break
        return out
    finally:
        await consumer.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_receiver_down_then_back_is_retried_not_lost(traffic: Traffic) -> None:
    ev = DropoffEvaluator(traffic.definitions.journeys)
    ev.observe_many(traffic.observations)
    records = ev.advance(traffic.final_watermark)
    assert len(records) == len(traffic.expected)
    port = _free_port()
    letters: list[DeadLetter] = []

    async def go() -> tuple[Receiver, WebhookDispatcher]:
        target = WebhookTarget(f"http://127.0.0.1:{port}/hook")
        async with WebhookDispatcher([target], letters.append, secret=SECRET,
                                     policy=FAST) as d:
            await d.submit(records)
            while d.stats.retries < 3:  # nothing listens: connection refused, retried
                await asyncio.sleep(0.02)
            receiver = await Receiver(SECRET, port=port, fail_first=2).start()  # flaky, then up
            try:
                await d.join()
                await d.submit(records)  # a re-emission after recovery is not sent again
                await d.join()
            finally:
                await receiver.stop()
        return receiver, d

    receiver, d = asyncio.run(asyncio.wait_for(go(), 60))
    ids = [r.headers["X-Journeys-Alert-Id"] for r in receiver.received]
    assert sorted(ids) == sorted(r.alert_id for r in records)  # all, each exactly once
    assert receiver.rejected == 2 and letters == [] and d.stats.retries >= 5
    assert d.stats.skipped_duplicates == len(records)
