"""Any plain Kafka producer works: events produced with `kcat` (docs/ingest.md recipe).

Debian bookworm's kcat 1.7.1 loads the system librdkafka 2.0.2, which cannot parse the
embedded broker's (Tansu 0.6) ApiVersions v3 answer ("Read underflow"); a current
librdkafka can. So against the embedded broker kcat runs with the librdkafka that the
confluent-kafka wheel ships (LD_LIBRARY_PATH shim); against Apache Kafka the stock
package works as it is. tests/integration/test_ingest_worker.py checks that the worker
processes what kcat produced.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
from kafka.partitioner import murmur2

from deploy.local.broker import LocalBroker
from ingest.generator import GeneratorConfig, generate_events
from journeys.events import EventValidator, Rejection, Touchpoint
from tests.integration.ingest_support import kafka_config, kcat_line, kcat_produce, read_topic


def test_kcat_produced_events_land_valid_and_co_partitioned(
    broker: LocalBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    kafka = kafka_config(broker.bootstrap_servers, unique_name("kcat"), partitions=3)
    events = list(generate_events(GeneratorConfig(seed=21, start_ms=1_772_323_200_000,
                                                  max_events=200, visitors_per_hour=500)))
    lines = [kcat_line(e) for e in events]
    lines.append(b"anon-x|" + orjson.dumps({"event_id": "kcat-bad", "type": "product_view",
                                             "channel": "web", "occurred_at": 1772323200}))
    kcat_produce(kafka, lines, tmp_path)

    raw = read_topic(kafka.bootstrap_servers, kafka.raw_topic, expected=len(lines))
    assert len(raw) == len(lines)
    validator = EventValidator()
    bad = next(validator.parse(r.value) for r in raw if r.key == b"anon-x")
    assert isinstance(bad, Rejection) and bad.reason.startswith("bad_timestamp:")
    assert bad.event_id == "kcat-bad"  # the stream worker dead-letters it with this reason
    good = [validator.parse(r.value) for r in raw if r.key != b"anon-x"]
    assert all(isinstance(t, Touchpoint) for t in good)
    assert sorted(t.event_id for t in good) == sorted(e["event_id"] for e in events)  # type: ignore[union-attr]
    for record in raw:  # same partition as kafka-python would pick for the key
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % 3
