"""Every ingest path as far as the warehouse: collector, file import and kcat feed the
raw topic, a real stream worker (`python -m stream`, subprocess) processes it into a
real ClickHouse server. Touchpoints and sessions must come out exactly as the
reference semantics say; nothing valid is lost, nothing invalid is silent."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import typer
from typer.testing import CliRunner

from deploy.commands import ingest as ingest_commands
from deploy.local.broker import LocalBroker
from deploy.local.clickhouse import LocalClickHouse
from ingest.writers import write_events
from journeys.settings import CollectorSettings
from tests.integration.ingest_support import (
    Worker,
    expected_sessions,
    free_port,
    journey_events,
    kafka_config,
    kcat_line,
    kcat_produce,
    read_topic,
    serve_collector,
    warehouse_event_ids,
    warehouse_sessions,
)

START = 1_772_323_200_000  # 2026-03-01T00:00Z


# Several raw partitions: the validate stage must merge a backlog in event-time order
# (stream.eventtime.align); before it did, hours posted in a second came out late.


@pytest.fixture
def partitions() -> int:
    return 1


@pytest.fixture
def worker(broker: LocalBroker, clickhouse_server: LocalClickHouse,
           unique_name: Callable[[str], str], tmp_path: Path, partitions: int
           ) -> Iterator[Worker]:
    """A worker on its own topics and database, started before any producing, stopped
    (SIGTERM by PID) after the test."""
    kafka = kafka_config(broker.bootstrap_servers, unique_name("ingw"), partitions=partitions)
    w = Worker(kafka, clickhouse_server, unique_name("ingw"), unique_name("ingw-worker"),
               tmp_path).start()
    try:
        yield w
    finally:
        w.stop()


def _letters(worker: Worker, expected: int) -> dict[str, dict[str, Any]]:
    records = read_topic(worker.kafka.bootstrap_servers, worker.kafka.dead_letter_topic,
                         expected=expected)
    assert len(records) == expected
    return {orjson.loads(r.value)["event_id"] or orjson.loads(r.value)["original"]:
            orjson.loads(r.value) for r in records}


@pytest.mark.parametrize("partitions", [1, 3])
def test_collector_to_worker_exact_sessions(worker: Worker) -> None:
    good = journey_events("http", seed=1, customers=60, start_ms=START)
    assert 60 < len(expected_sessions(good)) < len(good)  # gaps split sessions, not all
    bad = [({"event_id": "h-fax", "type": "cart", "channel": "fax", "occurred_at": START,
             "customer_id": "c1"}, "unknown_channel"),
           ({"event_id": "h-noid", "type": "cart", "channel": "web",
             "occurred_at": START}, "missing_identity"),
           ({"event_id": "h-time", "type": "cart", "channel": "web", "occurred_at": "soon",
             "anonymous_id": "a1"}, "bad_timestamp")]
    batches = [good[i:i + 100] for i in range(0, len(good), 100)]
    for k, (event, _) in enumerate(bad):  # rejected items in the middle of batches
        batches[k].insert(len(batches[k]) // 2, event)
    settings = CollectorSettings(kafka=worker.kafka, port=free_port(),
                                 write_keys={"shop-web": "wk-shop"})
    with serve_collector(settings) as url, httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": "Bearer wk-shop"}) as http:
        for batch in [*batches, batches[1]]:  # the last one is a client's resend
            r = http.post("/v1/events", json=batch)
            assert r.status_code == 202, r.text
            rejected = sum(1 for e in batch if e["event_id"].startswith("h-"))
            assert (r.json()["accepted"], r.json()["rejected"]) == (len(batch) - rejected,
                                                                    rejected)
    worker.wait_processed()

    wh = worker.warehouse()
    try:
        ids = warehouse_event_ids(wh)
        assert sorted(ids) == sorted(e["event_id"] for e in good)  # all, once each
        assert warehouse_sessions(wh) == expected_sessions(good)
        archived = wh.query(f"SELECT event_id, stage, reason, kafka_topic, kafka_partition,"
                            f" kafka_offset FROM {wh.database}.dead_letters")
        # the collector's rejections, archived from the dead-letter topic once each
        assert sorted((r[0], r[1], r[2].partition(":")[0]) for r in archived) == sorted([
            *((e["event_id"], "collector", code) for e, code in bad),
            (bad[1][0]["event_id"], "collector", "missing_identity")])  # the resent batch's
        assert {r[3] for r in archived} == {worker.kafka.dead_letter_topic}
        assert len({(r[4], r[5]) for r in archived}) == 4
        source = wh.query(f"SELECT DISTINCT source FROM {wh.database}.touchpoints")
        assert source == [("shop-web",)]  # stamped from the write key
    finally:
        wh.close()
    letters = _letters(worker, expected=3 + 1)  # the resent batch held one bad item too
    for event, code in bad:
        letter = letters[event["event_id"]]
        assert letter["reason"].startswith(code + ":") and letter["stage"] == "collector"
        assert orjson.loads(letter["original"])["event_id"] == event["event_id"]


def test_file_import_and_kcat_to_worker(worker: Worker, tmp_path: Path) -> None:
    events = journey_events("fk", seed=2, customers=60, start_ms=START)
    half = len(events) // 2  # file first, then kcat: each partition stays in time order
    from_file, from_kcat = events[:half], events[half:]

    path = tmp_path / "store-export.jsonl"
    rows: list[Any] = list(from_file)
    rows.insert(10, {**from_file[0], "event_id": "f-chan", "channel": "fax"})
    rows.insert(20, {**from_file[0], "event_id": "f-time", "occurred_at": "yesterday"})
    write_events(rows, path)
    app = typer.Typer()
    ingest_commands.register(app)
    result = CliRunner().invoke(app, [
        "ingest", str(path), "--rejects", str(tmp_path), "-b", worker.kafka.bootstrap_servers,
        "--topic-prefix", worker.kafka.topic_prefix], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"{half:,} accepted, 2 rejected" in result.output

    broken = b'{"event_id": "k-broken", "type": "cart", "channel": '
    late_time = {"event_id": "k-secs", "type": "cart", "channel": "web",
                 "occurred_at": 1772323200, "anonymous_id": "a-k"}  # seconds, not ms
    lines = [kcat_line(e) for e in from_kcat]
    lines[5:5] = [b"a-k|" + broken, kcat_line(late_time)]
    kcat_produce(worker.kafka, lines, tmp_path)
    worker.wait_processed()

    wh = worker.warehouse()
    try:
        assert sorted(warehouse_event_ids(wh)) == sorted(e["event_id"] for e in events)
        assert warehouse_sessions(wh) == expected_sessions(events)
        dead = sorted((r[0].partition(":")[0], r[1], r[2]) for r in wh.query(
            f"SELECT reason, stage, original FROM {wh.database}.dead_letters "
            f"WHERE stage = 'validate'"))
        assert dead == [("bad_timestamp", "validate", orjson.dumps(late_time).decode()),
                        ("invalid_json", "validate", broken.decode())]
        imported = sorted((r[0], r[1], r[2].partition(":")[0]) for r in wh.query(
            f"SELECT event_id, stage, reason FROM {wh.database}.dead_letters "
            f"WHERE stage != 'validate'"))  # archived from the dead-letter topic
        assert imported == [("f-chan", "import", "unknown_channel"),
                            ("f-time", "import", "bad_timestamp")]
    finally:
        wh.close()
    letters = _letters(worker, expected=4)  # 2 from the import, 2 from the worker
    assert {k: (v["stage"], v["reason"].partition(":")[0]) for k, v in letters.items()} == {
        "f-chan": ("import", "unknown_channel"), "f-time": ("import", "bad_timestamp"),
        "k-secs": ("validate", "bad_timestamp"), broken.decode(): ("validate", "invalid_json")}
