"""Scale-out with real processes on Apache Kafka and a ClickHouse server: three stream
workers in one group, one removed (SIGTERM) and one added mid-stream, then two API
processes: the warehouse equals the reference (what one worker produces: bench_stream
and the matrix test show the two agree), and both APIs answer the same numbers, equal
to the reference funnel."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.local.clickhouse import LocalClickHouse
from journeys.definitions import load_definitions
from journeys.settings import KafkaConfig, WarehouseConfig
from journeys.topics import ensure_journey_topics
from stream.engine.identity import JUNK_IDS
from tests.integration.ingest_support import ROOT, free_port
from tests.integration.stream_support import (
    demo_day,
    journeys_in,
    late_events,
    produce,
    produce_fillers,
    row_view,
    sessions_in,
    start_worker,
    stop_worker,
    wait_pipeline,
    worker_env,
)
from tests.reference.journeys_ref import funnel as ref_funnel
from tests.reference.stitching_ref import split, view_of
from warehouse.connect import connect

PARTITIONS = 4
DAY = 86_400_000
LATENESS_MS = 300_000  # the default
START_MS = 1_772_384_400_000  # 2026-03-01T17:00Z, an afternoon start


def _api(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", "api", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _funnel(port: int, days: tuple[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/v1/journeys/purchase/funnel",
                          params={"from": days[0], "to": days[1]}, timeout=30)
            r.raise_for_status()
            body: dict[str, Any] = r.json()
            return body
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.timeout(600)
def test_three_workers_one_removed_one_added_two_apis_equal_the_reference(
    kafka_broker: Any, clickhouse_server: LocalClickHouse,
    unique_name: Callable[[str], str], tmp_path: Path,
) -> None:
    defs = load_definitions()
    prefix, db, app_id = unique_name("so"), unique_name("so"), unique_name("sow")
    kafka = KafkaConfig(bootstrap_servers=kafka_broker.bootstrap_servers, topic_prefix=prefix,
                        partitions=PARTITIONS)
    ensure_journey_topics(kafka)
    env = worker_env(kafka, clickhouse_server.host, clickhouse_server.tcp_port, db, app_id,
                     ALLOWED_LATENESS_MS=str(LATENESS_MS))
    events = demo_day(START_MS)
    end = max(e["occurred_at"] for e in events) + 10 * DAY
    instances, want_sessions = split(defs, events, set(JUNK_IDS), end - LATENESS_MS)
    log = tmp_path / "workers.log"

    def worker(i: int) -> subprocess.Popen:
        return start_worker({**env, "JOURNEYS_DATA_DIR": str(tmp_path / f"w{i}")}, log)

    half = len(events) // 2
    produce(kafka, events[:half])
    procs = [worker(i) for i in range(3)]
    apis: list[subprocess.Popen] = []
    try:
        time.sleep(4.0)  # the group formed and the first half is being processed
        stop_worker(procs.pop(0))  # removed: leaves the group, commits what it finished
        procs.append(worker(3))  # added
        produce(kafka, events[half:])
        produce_fillers(kafka, end)
        wait_pipeline(kafka, app_id, procs, log, timeout=400)

        wh = connect(WarehouseConfig(backend="server", host=clickhouse_server.host,
                                     port=clickhouse_server.tcp_port, database=db),
                     create_database=False)
        try:
            want = view_of(instances)
            got = {iid: row_view(r) for iid, r in journeys_in(wh).items()}
            bad = [i for i in want if got.get(i) != want[i]]
            extra = set(got) - set(want)
            assert not bad and not extra, (
                f"{len(bad)} wrong or missing, {len(extra)} extra; late {late_events(log)}")
            assert sessions_in(wh) == want_sessions
        finally:
            wh.close()

        api_env = {k: v for k, v in env.items() if not k.startswith("JOURNEYS_KAFKA")}
        ports = [free_port(), free_port()]
        apis = [_api(api_env, p, tmp_path / f"api{p}.log") for p in ports]
        opened = [i.opened_at for i in instances if i.journey == "purchase"]
        days = tuple(datetime.fromtimestamp(t / 1000, UTC).date().isoformat()
                     for t in (min(opened), max(opened)))
        answers = [_funnel(p, (days[0], days[1])) for p in ports]
        assert answers[0] == answers[1]
        assert {s["step"]: s["instances"] for s in answers[0]["steps"]} == \
            ref_funnel(defs.get("purchase"), instances)
    finally:
        for p in apis:
            stop_worker(p)
        for p in procs:
            stop_worker(p)
