"""One customer with ~250k events in one journey (500k with JOURNEYS_FAULTS_LONG=1, the
issue's size), and a device with 200k events in one open session handed over to its
customer (400k long), queued as a backlog, through a real worker on Apache Kafka into a
ClickHouse server (Apache Kafka only: the size limits under test are the worker's,
whatever the broker, and the run takes minutes).

Before capped paths and split customer records, ~210k events in one journey made the
customer's state one 8 MiB changelog record: MessageSizeTooLargeError, a crash loop that
stopped every partition. Now: no crash, every changelog record of the worker's tables
within the bound (stream.stages.customer_state.RECORD_BOUND, stream.stages.parts), and
the instance row's figures (events, furthest step, closed_at, detours per kind, step
and channel, also through the detours report) equal the uncapped reference
(docs/reliability.md "Bounded state").
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from journeys.definitions import load_definitions
from journeys.settings import DEFAULT_PATH_CAP, KafkaConfig, WarehouseConfig
from journeys.timeutil import now_ms
from journeys.topics import PRODUCER_MAX_REQUEST_BYTES, ensure_journey_topics
from stream.stages.customer_state import RECORD_BOUND
from stream.stages.envelopes import MAX_HANDOVER_BYTES, decode
from stream.stages.parts import is_part
from tests.integration.stream_support import (
    produce_fillers,
    start_worker,
    stop_worker,
    wait_pipeline,
    worker_env,
)
from tests.reference.journeys_ref import Ev, all_journeys
from warehouse.connect import connect
from warehouse.queries import detours

LONG = os.environ.get("JOURNEYS_FAULTS_LONG") == "1"
EVENTS = 500_000 if LONG else 250_000
STEP_MS = 500_000_000 // EVENTS  # ~5.8 days either way: one purchase journey (window 7d)
# never the goal: a journey that keeps going, with backtracks, loops, off-path events
CYCLE = ("add_to_cart", "cart", "support_chat", "cart", "product_view", "shipping_details",
         "cart", "error_page", "shipping_details", "payment_details", "cart")


def _events(customer: str, start: int) -> list[dict[str, Any]]:
    out = [{"event_id": "o", "type": "product_view", "channel": "web", "occurred_at": start,
            "customer_id": customer}]
    for i in range(1, EVENTS):
        out.append({"event_id": f"{i:x}", "type": CYCLE[i % len(CYCLE)],
                    "channel": "app" if i % 7 == 0 else "web",
                    "occurred_at": start + i * STEP_MS, "customer_id": customer})
    return out


def _produce(kafka: KafkaConfig, events: list[dict[str, Any]]) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks=1,
                             linger_ms=20, batch_size=256 * 1024)
    try:
        for e in events:
            key = e.get("anonymous_id") or e["customer_id"]
            producer.send(kafka.raw_topic, key=key.encode(), value=orjson.dumps(e))
        producer.flush(120)
    finally:
        producer.close()


def _record_sizes(bootstrap: str, topics: list[str],
                  marked: Callable[[Any], bool]) -> tuple[int, int, int]:
    """(records, largest value, records `marked` says yes to) over the given topics,
    read from the beginning to their ends."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             max_partition_fetch_bytes=16 * 1024 * 1024,
                             fetch_max_bytes=32 * 1024 * 1024)
    try:
        tps = [TopicPartition(t, p) for t in topics
               for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        n = largest = count = 0
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"{topics} not read in 120 s"
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    n += 1
                    largest = max(largest, len(r.value or b""))
                    count += marked(r)
        return n, largest, count
    finally:
        consumer.close()


def _backlog(kafka: KafkaConfig, clickhouse_server: Any, database: str, app_id: str,
             tmp_path: Path, events: list[dict[str, Any]], *, after_s: float) -> None:
    """`events` queued as a backlog, then one worker through it and through the
    fillers (every raw partition's watermark far ahead): it must not stop, nor fail a
    batch, nor meet a record too large."""
    _produce(kafka, events)  # the backlog, queued before the worker starts
    log = tmp_path / "worker.log"
    proc = start_worker(worker_env(kafka, clickhouse_server.host, clickhouse_server.tcp_port,
                                   database, app_id), log)
    try:
        wait_pipeline(kafka, app_id, [proc], log, timeout=1800 if LONG else 600)
        produce_fillers(kafka, now_ms())
        wait_pipeline(kafka, app_id, [proc], log, timeout=after_s)
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        stop_worker(proc)
    text = log.read_text(errors="replace")
    assert "batch failed" not in text and "TooLarge" not in text, text[-3000:]


@pytest.mark.timeout(2400 if LONG else 900)
def test_one_customer_with_hundreds_of_thousands_of_events_in_one_journey(
        kafka_broker: Any, clickhouse_server: Any, unique_name: Callable[[str], str],
        tmp_path: Path) -> None:
    prefix = unique_name("big")
    kafka = KafkaConfig(bootstrap_servers=kafka_broker.bootstrap_servers, topic_prefix=prefix,
                        partitions=2)
    ensure_journey_topics(kafka)
    customer = f"{prefix}-cust"
    start = (now_ms() - 10 * 86_400_000) // 1000 * 1000
    events = _events(customer, start)
    database, app_id = unique_name("bigdb"), unique_name("bigw")
    # every deadline passes after the backlog: the journey abandons
    _backlog(kafka, clickhouse_server, database, app_id, tmp_path, events, after_s=120)

    topics = [t for t in KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers).topics()
              if t.startswith(app_id) and t.endswith("-changelog")]
    assert any("customer-state" in t for t in topics), topics
    n, largest, parts = _record_sizes(kafka.bootstrap_servers, topics,
                                      lambda r: is_part(r.key or b""))
    assert n and largest <= RECORD_BOUND, (n, largest)
    assert parts, "the customer's value never outgrew one record: the bound went untested"

    definitions = load_definitions(None)
    purchase = next(d for d in definitions.journeys if d.name == "purchase")
    [want] = [i for i in all_journeys(definitions.journeys, [
        Ev(e["event_id"], customer, e["type"], e["channel"], e["occurred_at"]) for e in events],
        watermark=now_ms()) if i.journey == "purchase"]
    wh = connect(WarehouseConfig(backend="server", host=clickhouse_server.host,
                                 port=clickhouse_server.tcp_port, database=database),
                 create_database=False)
    try:
        [row] = wh.query(
            f"SELECT instance_id, status, closed_at_ms, furthest_step, events, path_truncated,"
            " length(path_types), detour_kinds, detour_steps, detour_channels,"
            " capped_detour_kinds, capped_detour_steps, capped_detour_channels,"
            f" capped_detour_counts FROM {database}.journey_instances FINAL"
            " WHERE deleted = 0 AND customer_id = %(c)s AND journey = 'purchase'",
            {"c": customer})
        day = datetime.fromtimestamp(start / 1000, UTC).date()
        report, _shares = detours.run(wh, purchase, date_from=day, date_to=day,
                                      breakdown=["step", "detour_channel"])
    finally:
        wh.close()
    (iid, status, closed, furthest, n_events, truncated, kept, kinds, steps, chans,
     ckinds, csteps, cchans, counts) = row
    assert (iid, status, int(closed), int(furthest)) == (
        want.instance_id, want.status, want.closed_at, want.furthest)
    assert (int(n_events), int(truncated), int(kept)) == (len(want.path), 1, DEFAULT_PATH_CAP)
    got: Counter[tuple[str, str, str]] = Counter(zip(kinds, steps, chans, strict=True))
    for key, c in zip(zip(ckinds, csteps, cchans, strict=True), counts, strict=True):
        got[key] += int(c)
    expected = Counter((d.kind, d.step, d.channel) for d in want.detours)
    assert got == expected
    assert {(r.kind, r.step, r.detour_channel): r.detours for r in report} == dict(expected)


DEVICE_EVENTS = 400_000 if LONG else 200_000


@pytest.mark.timeout(2400 if LONG else 900)
def test_a_device_with_a_long_open_session_hands_it_over_in_pieces(
        kafka_broker: Any, clickhouse_server: Any, unique_name: Callable[[str], str],
        tmp_path: Path) -> None:
    """A device with 200k events (400k long) in one open session, with 36-character
    event ids, then linked to a customer: its handover carries every event's id, ~9 MB,
    over the worker's 8 MiB record limit (before pieces: MessageSizeTooLargeError and a
    crash loop). Now it travels as pieces of 1 MiB, and the customer's one session
    counts every event once, the device's session deleted."""
    prefix = unique_name("dev")
    kafka = KafkaConfig(bootstrap_servers=kafka_broker.bootstrap_servers, topic_prefix=prefix,
                        partitions=2)
    ensure_journey_topics(kafka)
    device, customer = f"{prefix}-device", f"{prefix}-cust"
    start = (now_ms() - 10 * 86_400_000) // 1000 * 1000
    events = [{"event_id": f"{i:036x}", "type": "product_view" if i % 5 else "search",
               "channel": "web", "occurred_at": start + i * 1000, "anonymous_id": device}
              for i in range(DEVICE_EVENTS)]
    events.append({"event_id": "link", "type": "login", "channel": "web",
                   "occurred_at": start + DEVICE_EVENTS * 1000, "anonymous_id": device,
                   "customer_id": customer})
    database, app_id = unique_name("devdb"), unique_name("devw")
    # the device reaches its link time after the backlog: it hands over
    _backlog(kafka, clickhouse_server, database, app_id, tmp_path, events, after_s=300)
    n, largest, pieces = _record_sizes(kafka.bootstrap_servers, [kafka.handovers_topic],
                                       lambda r: "hp" in (decode(r.value) or {}))
    assert largest <= MAX_HANDOVER_BYTES + 1024, (n, largest)
    # pieces of 1 MiB: more than eight, so one record would have been over 8 MiB
    assert pieces > PRODUCER_MAX_REQUEST_BYTES // MAX_HANDOVER_BYTES, (n, pieces)
    wh = connect(WarehouseConfig(backend="server", host=clickhouse_server.host,
                                 port=clickhouse_server.tcp_port, database=database),
                 create_database=False)
    try:
        rows = wh.query(f"SELECT customer_id, events, started_at_ms FROM {database}.sessions"
                        " FINAL WHERE deleted = 0 AND customer_id IN (%(d)s, %(c)s)",
                        {"d": device, "c": customer})
    finally:
        wh.close()
    assert [(c, int(k), int(t)) for c, k, t in rows] == [(customer, DEVICE_EVENTS + 1, start)]
