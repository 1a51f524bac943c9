"""`journeys ingest` and `journeys generate` against the real broker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
import typer
from kafka.partitioner.default import murmur2
from typer.testing import CliRunner

from deploy.commands import ingest as ingest_commands
from deploy.local.broker import LocalBroker
from ingest.generator import GeneratorConfig, generate_events
from ingest.stories import demo_stories
from ingest.writers import write_events
from journeys.events import EventValidator, Touchpoint
from journeys.settings import KafkaConfig
from tests.integration.ingest_support import kafka_config, read_topic

START = 1_772_323_200_000


def cli() -> typer.Typer:
    app = typer.Typer()
    ingest_commands.register(app)
    return app


def run(*args: str) -> Any:
    return CliRunner().invoke(cli(), [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def kafka(broker: LocalBroker, unique_name: Callable[[str], str]) -> KafkaConfig:
    return kafka_config(broker.bootstrap_servers, unique_name("imp"))


def _kafka_args(kafka: KafkaConfig) -> list[str]:
    return ["-b", kafka.bootstrap_servers, "--topic-prefix", kafka.topic_prefix]


def _good(n: int, seed: int = 1) -> list[dict[str, Any]]:
    return list(generate_events(GeneratorConfig(seed=seed, start_ms=START, max_events=n,
                                                visitors_per_hour=3000)))


BAD = [  # (event, reason code) — one per kind of mistake an export makes
    ({"event_id": "b-chan", "type": "purchase", "channel": "fax",
      "occurred_at": "2026-03-01T10:00:00Z", "customer_id": "c1"}, "unknown_channel"),
    ({"event_id": "b-time", "type": "purchase", "channel": "store",
      "occurred_at": "last tuesday", "customer_id": "c1"}, "bad_timestamp"),
    ({"event_id": "b-id", "type": "purchase", "channel": "store",
      "occurred_at": "2026-03-01T10:00:00Z"}, "missing_identity"),
    ({"event_id": "b-type", "type": "", "channel": "store",
      "occurred_at": "2026-03-01T10:00:00Z", "customer_id": "c1"}, "missing_field"),
]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_mixed_file_good_rows_to_raw_bad_rows_to_dead_letters_and_file(
    tmp_path: Path, kafka: KafkaConfig, suffix: str
) -> None:
    good = _good(2500)
    rows = good[:1000] + [b for b, _ in BAD[:2]] + good[1000:] + [b for b, _ in BAD[2:]]
    path = tmp_path / f"mixed{suffix}"
    write_events(rows, path)
    result = run("ingest", path, "--chunk-rows", "700", "--rejects", tmp_path,
                 *_kafka_args(kafka))
    assert result.exit_code == 0, result.output
    assert "2,504 rows, 2,500 accepted, 4 rejected" in result.output

    raw = read_topic(kafka.bootstrap_servers, kafka.raw_topic, expected=2500)
    validator = EventValidator()
    parsed = [validator.parse(r.value) for r in raw]
    assert all(isinstance(t, Touchpoint) for t in parsed)
    assert sorted(t.event_id for t in parsed) == sorted(e["event_id"] for e in good)  # type: ignore[union-attr]
    assert all(r.key == t.identity_key.encode() for r, t in zip(raw, parsed, strict=True))  # type: ignore[union-attr]
    # the partition of Java's / kafka-python's murmur2, whoever hashed the key
    assert all(r.partition == (murmur2(r.key) & 0x7FFFFFFF) % kafka.partitions for r in raw)

    dead = read_topic(kafka.bootstrap_servers, kafka.dead_letter_topic, expected=4)
    letters = {orjson.loads(r.value)["event_id"]: (orjson.loads(r.value), dict(r.headers))
               for r in dead}
    assert set(letters) == {b["event_id"] for b, _ in BAD}
    for bad, code in BAD:
        letter, headers = letters[bad["event_id"]]
        assert letter["reason"].startswith(code + ":") and letter["stage"] == "import"
        assert headers["journeys-file"] == path.name.encode()
    assert letters["b-chan"][1]["journeys-row"] == b"1001"
    assert letters["b-id"][1]["journeys-row"] == b"2503"

    rejects = tmp_path / f"{path.name}.rejected.jsonl"
    written = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [w["row"] for w in written] == [1001, 1002, 2503, 2504]
    assert str(rejects) in result.output.replace("\n", "")


def test_store_export_with_mapping_and_derived_ids_is_idempotent(
    tmp_path: Path, kafka: KafkaConfig
) -> None:
    path = tmp_path / "pos.csv"
    pd.DataFrame({
        "card": [f"c{i}" for i in range(50)],
        "when": [f"2026-03-01 {10 + i // 10}:{i % 60:02d}:00" for i in range(50)],
        "total": [f"{i}.99" for i in range(50)],
        "context.store": ["berlin-1"] * 50,
    }).to_csv(path, index=False)
    args = ["ingest", path, "--customer-column", "card", "--time-column", "when",
            "--type", "purchase", "--channel", "store", "--source", "pos",
            "--timezone", "Europe/Berlin", "--rejects", tmp_path, *_kafka_args(kafka)]
    assert run(*args).exit_code == 0
    assert run(*args).exit_code == 0  # again: same derived ids, deduplicated downstream
    raw = read_topic(kafka.bootstrap_servers, kafka.raw_topic, expected=100)
    events = [orjson.loads(r.value) for r in raw]
    ids = [e["event_id"] for e in events]
    assert len(ids) == 100 and len(set(ids)) == 50
    first = next(e for e in events if e["customer_id"] == "c0")
    assert first["occurred_at"] == "2026-03-01T09:00:00.000Z"
    assert (first["channel"], first["type"], first["source"]) == ("store", "purchase", "pos")
    assert first["properties"] == {"total": "0.99"}
    assert first["context"] == {"store": "berlin-1"}


def test_nothing_accepted_exits_nonzero(tmp_path: Path, kafka: KafkaConfig) -> None:
    path = tmp_path / "all-bad.jsonl"
    write_events([b for b, _ in BAD], path)
    result = run("ingest", path, "--rejects", tmp_path, *_kafka_args(kafka))
    assert result.exit_code == 1
    assert "no row was accepted" in result.output
    assert len(read_topic(kafka.bootstrap_servers, kafka.dead_letter_topic, expected=4)) == 4


def test_parallel_jobs_import_several_files(tmp_path: Path, kafka: KafkaConfig) -> None:
    files = []
    for i in range(3):
        path = tmp_path / f"part{i}.jsonl"
        write_events(_good(800, seed=10 + i), path)
        files.append(path)
    result = run("ingest", *files, "--jobs", "2", "--order", "file", "--rejects", tmp_path, *_kafka_args(kafka))
    assert result.exit_code == 0, result.output
    assert result.output.count("800 accepted") == 3
    assert len(read_topic(kafka.bootstrap_servers, kafka.raw_topic, expected=2400)) == 2400


def test_generate_to_topic_matches_the_pure_generator(kafka: KafkaConfig) -> None:
    args = ["generate", "--seed", "7", "--start", "2026-03-01T00:00:00Z", "--duration", "3d",
            "--visitors-per-hour", "20", "--demo-stories", *_kafka_args(kafka)]
    result = run(*args)
    assert result.exit_code == 0, result.output
    expected = list(generate_events(GeneratorConfig(
        seed=7, start_ms=START, duration_ms=3 * 86_400_000, visitors_per_hour=20,
        stories=demo_stories(3 * 86_400_000))))
    assert "story payment_incident" in result.output
    raw = read_topic(kafka.bootstrap_servers, kafka.raw_topic, expected=len(expected))
    assert sorted(orjson.loads(r.value)["event_id"] for r in raw) == sorted(
        e["event_id"] for e in expected)


def test_generate_to_file(tmp_path: Path) -> None:
    out = tmp_path / "sample.parquet"
    result = run("generate", "--out", out, "--max-events", "500", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(out)) == 500


def test_standard_input_is_imported_with_format(tmp_path: Path, kafka: KafkaConfig) -> None:
    source = tmp_path / "piped.jsonl"
    write_events(_good(300, seed=21), source)
    data = source.read_bytes()
    args = ["ingest", "-", "--rejects", str(tmp_path), *_kafka_args(kafka)]
    refused = CliRunner().invoke(cli(), args, input=data)
    assert refused.exit_code != 0 and "--format" in refused.output
    result = CliRunner().invoke(cli(), [*args, "--format", "jsonl"], input=data)
    assert result.exit_code == 0, result.output
    assert "stdin.jsonl: 300 rows" in result.output and "300 accepted" in result.output
    assert len(read_topic(kafka.bootstrap_servers, kafka.raw_topic, expected=300)) == 300


def test_file_order_import_keys_land_on_java_murmur2_partitions(
    tmp_path: Path, kafka: KafkaConfig
) -> None:
    """`--order file` lets librdkafka partition keyed records (ingest.rdkafka
    `partitions_keys`): each must land where kafka-python's / Java's murmur2 puts its key,
    as every other producer of the raw topic does, and carry the same bytes and headers
    as the event's `to_json()`."""
    from ingest.importer import ImportOptions, import_file
    from ingest.producer import bulk_producer

    events = _good(1500, seed=4)
    path = tmp_path / "ev.jsonl"
    write_events(events, path)
    producer = bulk_producer(kafka, client_id="imp-test")
    try:
        report = import_file(path, producer, ImportOptions(chunk_rows=400,
                                                           rejects_path=tmp_path / "r"))
    finally:
        producer.close()
    assert report.accepted == 1500
    raw = read_topic(kafka.bootstrap_servers, kafka.raw_topic, expected=1500)
    assert len(raw) == 1500
    validator = EventValidator()
    by_id = {e["event_id"]: validator.validate(e) for e in events}
    for r in raw:
        assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % kafka.partitions
        tp = by_id[orjson.loads(r.value)["event_id"]]
        assert isinstance(tp, Touchpoint) and r.value == tp.to_json()
        assert r.key == tp.identity_key.encode()
        headers = dict(r.headers)
        assert headers["journeys-file"] == b"ev.jsonl" and int(headers["journeys-row"]) >= 1
