"""`journeys replay` with the live pipeline (real Apache Kafka, a ClickHouse server, the
worker as a subprocess): a definition is changed after its history was processed, part
of that history having arrived late (left out by the stream, kept in `touchpoints`);
the workers restart with the new definition and keep processing new traffic (produced
while it runs) while `journeys replay` runs as the CLI. Afterwards the new version's
journeys and the sessions equal a fresh pipeline run of the new definition over the same
events arriving in order, and a second `replay --dry-run` reports no change."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from deploy.local.broker import LocalBroker
from deploy.local.clickhouse import LocalClickHouse
from journeys.definitions import Definitions, parse_definitions
from journeys.settings import KafkaConfig, WarehouseConfig
from journeys.topics import ensure_journey_topics
from stream.engine.identity import JUNK_IDS
from tests.integration.stream_support import (
    ROOT,
    produce,
    produce_fillers,
    sessions_in,
    start_worker,
    stop_worker,
    wait_pipeline,
    worker_env,
)
from tests.integration.test_replay_warehouse import CHANGED
from tests.integration.test_stream_journeys import DEFINITIONS, traffic
from warehouse.backend import Warehouse
from warehouse.connect import connect
from warehouse.sql import qualified
from warehouse.tables import JOURNEY_INSTANCES, LATE_EVENTS

# Kafka only in scripts/test.sh (CI budget): the replay reads and writes the warehouse;
# the live stream beside it runs on Tansu in the other stream tests.
pytestmark = pytest.mark.kafka_only


PARTITIONS = 2
LATENESS_MS = 300_000
DAY = 86_400_000
COLUMNS = ("instance_id", "customer_id", "status", "opened_at_ms", "closed_at_ms",
           "furthest_step", "path_types", "path_channels", "path_times", "detour_kinds",
           "detour_steps", "detour_times", "events", "context_keys", "context_values")


def _newcomers(after_ms: int) -> list[dict[str, Any]]:
    """Traffic of other people (ids prefixed), all after `after_ms`, in time order."""
    extra = traffic(seed=9, people=20)
    shift = after_ms - min(e["occurred_at"] for e in extra) + 3_600_000

    def renamed(x: str | None) -> str | None:
        return x if x is None or x in JUNK_IDS else f"x{x}"

    return sorted(({**e, "event_id": f"x{e['event_id']}", "occurred_at": e["occurred_at"]
                    + shift, "customer_id": renamed(e["customer_id"]),
                    "anonymous_id": renamed(e["anonymous_id"])} for e in extra),
                  key=lambda e: e["occurred_at"])


def _journeys(wh: Warehouse, defs: Definitions) -> dict[tuple[str, str], tuple[Any, ...]]:
    out: dict[tuple[str, str], tuple[Any, ...]] = {}
    for d in defs.journeys:
        for r in wh.query(
                f"SELECT {', '.join(COLUMNS)} FROM "
                f"{qualified(wh.database, JOURNEY_INSTANCES.name)} FINAL WHERE deleted = 0 "
                "AND journey = %(j)s AND definition_version = %(v)s",
                {"j": d.name, "v": d.version}):
            out[(d.name, r[0])] = tuple(list(x) if isinstance(x, (list, tuple)) else x
                                        for x in r[1:])
    return out


class Pipeline:
    """One prefix, database and worker on the shared broker and ClickHouse server."""

    def __init__(self, broker: LocalBroker, ch: LocalClickHouse, name: Callable[[str], str],
                 tmp: Path, tag: str) -> None:
        self.kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers,
                                 topic_prefix=name(f"rp{tag}"), partitions=PARTITIONS)
        ensure_journey_topics(self.kafka)
        self.db, self.tmp, self.app_id = name(f"rp{tag}"), tmp / tag, name(f"rpw{tag}")
        self.tmp.mkdir()
        self.ch = ch
        self.log = self.tmp / "worker.log"
        self.worker: subprocess.Popen[bytes] | None = None

    def env(self, definitions: str) -> dict[str, str]:
        path = self.tmp / f"definitions-{abs(hash(definitions))}.yaml"
        path.write_text(definitions)
        return worker_env(self.kafka, self.ch.host, self.ch.tcp_port, self.db, self.app_id,
                          DATA_DIR=str(self.tmp / "data"), DEFINITIONS_PATH=str(path),
                          ALLOWED_LATENESS_MS=str(LATENESS_MS))

    def start(self, definitions: str) -> None:
        self.stop()
        self.worker = start_worker(self.env(definitions), self.log, loglevel="info")

    def wait(self) -> None:
        assert self.worker is not None
        wait_pipeline(self.kafka, self.app_id, [self.worker], self.log, timeout=240)

    def stop(self) -> None:
        if self.worker is not None:
            stop_worker(self.worker)
            self.worker = None

    def warehouse(self) -> Warehouse:
        return connect(WarehouseConfig(backend="server", host=self.ch.host,
                                       port=self.ch.tcp_port, database=self.db),
                       create_database=False)

    def replay(self, definitions: str, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "deploy.cli", "replay", *args],
                              cwd=ROOT, env=self.env(definitions), capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done


@pytest.mark.timeout(900)
def test_changed_definition_replayed_live_equals_a_fresh_run(
    broker: LocalBroker, clickhouse_server: LocalClickHouse,
    unique_name: Callable[[str], str], tmp_path: Path,
) -> None:
    events = sorted(traffic(seed=8, people=60), key=lambda e: e["occurred_at"])
    end = max(e["occurred_at"] for e in events) + 3 * DAY
    late_owners = {f"cust-{k}" for k in range(1, 60, 9)}
    held = [e for e in events if e["customer_id"] in late_owners]
    assert len(held) > 10
    new = parse_definitions(yaml.safe_load(CHANGED))
    later = _newcomers(end)

    live = Pipeline(broker, clickhouse_server, unique_name, tmp_path, "live")
    fresh = Pipeline(broker, clickhouse_server, unique_name, tmp_path, "fresh")
    try:
        live.start(DEFINITIONS)
        produce(live.kafka, [e for e in events if e["customer_id"] not in late_owners])
        produce_fillers(live.kafka, end)
        live.wait()
        produce(live.kafka, held)  # behind every watermark now: late, raw table only
        live.wait()
        lwh = live.warehouse()
        try:  # the worker wrote them down as late (raw table, late_events)
            [(n,)] = lwh.query(f"SELECT uniqExact(event_id) FROM "
                               f"{qualified(lwh.database, LATE_EVENTS.name)}")
            assert n == len(held)
        finally:
            lwh.close()

        fresh.start(CHANGED)
        produce(fresh.kafka, events)
        produce_fillers(fresh.kafka, end)
        produce(fresh.kafka, later)
        fresh.wait()
        fresh.stop()

        live.start(CHANGED)  # the definition changed: workers restart with it, and run on
        dry = orjson.loads(live.replay(CHANGED, "--dry-run", "--json").stdout)
        assert dry["counts"]["purchase"]["added"] > 0 and dry["finished"]
        assert dry["counts"]["(sessions)"]["added"] > 0  # the late events' sessions
        # all of them end in final sessions and journeys: the replay takes them off the
        # late-events list (a dry run only says so)
        assert dry["late_applied"] == len({e["event_id"] for e in held})
        def live_traffic() -> None:  # new customers, while the replay runs
            for i in range(0, len(later), 40):
                produce(live.kafka, later[i:i + 40])
                time.sleep(0.2)

        feeder = threading.Thread(target=live_traffic)
        feeder.start()
        try:
            out = live.replay(CHANGED).stdout
        finally:
            feeder.join()
        assert "replayed" in out and "row(s) written" in out, out
        assert f"taken off the late-events list: {dry['late_applied']:,}" in out, out
        live.wait()
        lwh, fwh = live.warehouse(), fresh.warehouse()
        try:
            [(n,)] = lwh.query(f"SELECT count() FROM "
                               f"{qualified(lwh.database, LATE_EVENTS.name)}")
            assert n == 0  # applied: no longer reported as left out
            want = _journeys(fwh, new)
            assert len(want) > 100
            assert _journeys(lwh, new) == want
            assert sessions_in(lwh) == sessions_in(fwh)
        finally:
            lwh.close()
            fwh.close()
        again = orjson.loads(live.replay(CHANGED, "--dry-run", "--json").stdout)
        changes = {k: c["added"] + c["changed"] + c["removed"]
                   for k, c in again["counts"].items()}
        assert changes == dict.fromkeys(changes, 0), again
    finally:
        live.stop()
        fresh.stop()
