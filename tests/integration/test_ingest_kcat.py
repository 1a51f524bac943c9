"""Any plain Kafka producer works: events produced with `kcat` (docs/ingest.md recipe).

Debian bookworm's kcat 1.7.1 loads the system librdkafka 2.0.2, which cannot parse the
embedded broker's (Tansu 0.6) ApiVersions v3 answer ("Read underflow"); a current
librdkafka can. So against the embedded broker kcat runs with the librdkafka that the
confluent-kafka wheel ships (LD_LIBRARY_PATH shim); against Apache Kafka the stock
package works as it is.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import orjson
from kafka.partitioner import murmur2

from deploy.local.broker import LocalBroker
from ingest.generator import GeneratorConfig, generate_events
from journeys.events import EventValidator, Rejection, Touchpoint
from tests.integration.ingest_support import kafka_config, read_topic


def kcat_env(tmp_path: Path) -> dict[str, str]:
    """Environment for kcat: a current librdkafka (from confluent-kafka) if installed."""
    kcat = shutil.which("kcat")
    assert kcat, "kcat is not installed: apt-get install -y kcat (scripts/test.sh does)"
    env = dict(os.environ)
    spec = importlib.util.find_spec("confluent_kafka")
    assert spec is not None and spec.origin, (
        "confluent-kafka is needed for its librdkafka: Debian's 2.0.2 cannot talk to the "
        "embedded broker (see docs/ingest.md)")
    libs = sorted((Path(spec.origin).parent.parent / "confluent_kafka.libs")
                  .glob("librdkafka*.so*"))
    assert libs, "confluent-kafka wheel without a bundled librdkafka"
    shim = tmp_path / "librdkafka"
    shim.mkdir(exist_ok=True)
    link = shim / "librdkafka.so.1"
    if not link.exists():
        link.symlink_to(libs[0])
    env["LD_LIBRARY_PATH"] = f"{shim}:{env.get('LD_LIBRARY_PATH', '')}".rstrip(":")
    return env


def test_kcat_produced_events_land_valid_and_co_partitioned(
    broker: LocalBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    kafka = kafka_config(broker.bootstrap_servers, unique_name("kcat"), partitions=3)
    events = list(generate_events(GeneratorConfig(seed=21, start_ms=1_772_323_200_000,
                                                  max_events=200, visitors_per_hour=500)))
    lines = [(e["customer_id"] or e["anonymous_id"]).encode() + b"|" + orjson.dumps(e)
             for e in events]
    lines.append(b"anon-x|" + orjson.dumps({"event_id": "kcat-bad", "type": "product_view",
                                             "channel": "web", "occurred_at": 1772323200}))
    # The docs/ingest.md recipe: key|json per line, murmur2 like the Java/kafka-python
    # clients, acks=all, idempotent.
    proc = subprocess.run(
        ["kcat", "-P", "-b", kafka.bootstrap_servers, "-t", kafka.raw_topic, "-K", "|",
         "-X", "partitioner=murmur2_random", "-X", "acks=all",
         "-X", "enable.idempotence=true", "-z", "gzip"],
        input=b"\n".join(lines) + b"\n", env=kcat_env(tmp_path), capture_output=True,
        timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()

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
