"""Crashes and outages under traffic, through real workers, a real broker and a real
ClickHouse server: every event is accounted for exactly once, and journeys and
sessions equal the reference (an uninterrupted run gives the reference: the matrix and
bench_stream hold it to that).

- five SIGKILLs of a worker at seeded random points (two workers, each killed one
  restarted a slice later);
- the ClickHouse server stopped for a while (20 s; 60 s with JOURNEYS_FAULTS_LONG=1)
  while traffic goes on, then started again on its port with its data.

The traffic is tests/integration/test_stream_journeys.py's (stitched devices, detours,
duplicates, out-of-order arrival within the lateness). JOURNEYS_FAULTS_LONG=1 also
draws the kill points from a random seed (printed), instead of a fixed one.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deploy.local.clickhouse import LocalClickHouse
from journeys.definitions import load_definitions
from journeys.settings import KafkaConfig, WarehouseConfig
from journeys.topics import ensure_journey_topics
from stream.engine.identity import JUNK_IDS
from tests.faults.report import FaultFigures
from tests.integration.stream_support import (
    journeys_in,
    produce,
    produce_fillers,
    row_view,
    sessions_in,
    start_worker,
    stop_worker,
    wait_pipeline,
    worker_env,
)
from tests.integration.test_stream_journeys import (
    DEFINITIONS,
    LATENESS_MS,
    PARTITIONS,
    M,
    arrival_order,
    slices,
    traffic,
)
from tests.reference.stitching_ref import split_reference
from warehouse.connect import connect

# Kafka only in scripts/test.sh (CI budget): what a kill tests is the worker's recovery
# logic, the same on both brokers; recovery from Tansu's changelogs after a kill runs on
# Tansu in test_stream_journeys.py and test_stream_pipeline.py.
pytestmark = pytest.mark.kafka_only

LONG = os.environ.get("JOURNEYS_FAULTS_LONG") == "1"


def _setup(broker: Any, unique_name: Callable[[str], str], tmp_path: Path, ch_host: str,
           ch_port: int) -> tuple[KafkaConfig, str, str, list[dict[str, str]]]:
    defs_path = tmp_path / "definitions.yaml"
    defs_path.write_text(DEFINITIONS)
    prefix, app_id, db = unique_name("fk"), unique_name("fkw"), unique_name("fk")
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix,
                        partitions=PARTITIONS)
    ensure_journey_topics(kafka)
    base = worker_env(kafka, ch_host, ch_port, db, app_id, DEFINITIONS_PATH=str(defs_path),
                      FLUSH_INTERVAL_S="0.2", ALLOWED_LATENESS_MS=str(LATENESS_MS))
    envs = [{**base, "JOURNEYS_DATA_DIR": str(tmp_path / f"w{i}")} for i in range(2)]
    return kafka, app_id, db, envs


def _assert_exact(ch_host: str, ch_port: int, db: str, events: list[dict[str, Any]],
                  end: int, tmp_path: Path, report: Callable[..., None], fault: str,
                  recovery_s: float) -> None:
    """Report what the fault cost (lost: produced events not stored; doubled: events
    counted more than once in sessions), then hold the results to the reference."""
    defs = load_definitions(tmp_path / "definitions.yaml")
    want, want_sessions = split_reference(defs, events, set(JUNK_IDS), end - LATENESS_MS)
    wh = connect(WarehouseConfig(backend="server", host=ch_host, port=ch_port, database=db),
                 create_database=False)
    try:
        got = {iid: row_view(r) for iid, r in journeys_in(wh).items()}
        sessions = sessions_in(wh)
        stored = {r[0] for r in wh.query(f"SELECT event_id FROM {db}.touchpoints FINAL")}
        touchpoints = int(wh.query(f"SELECT count() FROM {db}.touchpoints FINAL")[0][0])
    finally:
        wh.close()
    lost = len({e["event_id"] for e in events} - stored)
    doubled = max(0, sum(s[3] for s in sessions) - sum(s[3] for s in want_sessions))
    report(fault, acknowledged=len(events), lost=lost, doubled=doubled,
           recovery_s=recovery_s,
           note="journeys and sessions = reference" if got == want and sessions ==
           want_sessions else "journeys or sessions differ from the reference")
    missing, extra = set(want) - set(got), set(got) - set(want)
    assert not missing and not extra, f"missing {len(missing)}, extra {len(extra)}"
    bad = [iid for iid in want if got[iid] != want[iid]]
    assert not bad, f"{len(bad)} of {len(want)} instances differ, e.g. {bad[:3]}"
    assert sessions == want_sessions
    assert touchpoints == len(events) + PARTITIONS  # and a filler per raw partition
    assert lost == 0 and doubled == 0


def test_five_sigkills_at_random_points_change_nothing(
        broker: Any, clickhouse_server: LocalClickHouse, unique_name: Callable[[str], str],
        tmp_path: Path, fault_figures: FaultFigures) -> None:
    host, port = clickhouse_server.host, clickhouse_server.tcp_port
    kafka, app_id, db, envs = _setup(broker, unique_name, tmp_path, host, port)
    log = tmp_path / "workers.log"
    seed = random.randrange(1 << 30) if LONG else 11
    print(f"kill points from seed {seed}")
    rnd = random.Random(seed)
    events = traffic(seed=5, people=90)
    parts = slices(arrival_order(events, seed=6))
    end = max(e["occurred_at"] for e in events) + 3 * 24 * 60 * M
    kills = dict(zip(sorted(rnd.sample(range(1, len(parts) - 2), 5)),
                     (rnd.randrange(2) for _ in range(5)), strict=True))
    workers = [start_worker(envs[0], log), start_worker(envs[1], log)]
    down: int | None = None
    recovery = 0.0  # longest wait, after a kill, until that slice was processed
    try:
        for i, part in enumerate(parts):
            produce(kafka, part)
            if down is not None:  # restart the one killed at the slice before
                workers[down] = start_worker(envs[down], log)
                down = None
            if i in kills:
                time.sleep(rnd.uniform(0.0, 1.0))  # somewhere in the slice's processing
                down = kills[i]
                os.kill(workers[down].pid, signal.SIGKILL)
                workers[down].wait(10)
            started = time.monotonic()
            wait_pipeline(kafka, app_id, [w for w in workers if w.poll() is None], log,
                          timeout=180)
            if i in kills:
                recovery = max(recovery, time.monotonic() - started)
        if down is not None:
            workers[down] = start_worker(envs[down], log)
        produce_fillers(kafka, end)
        wait_pipeline(kafka, app_id, workers, log, timeout=180)
        _assert_exact(host, port, db, events, end, tmp_path, fault_figures,
                      "worker SIGKILL x5 (2 workers, live traffic)", recovery)
    finally:
        for w in workers:
            stop_worker(w)


def test_clickhouse_down_for_a_while_changes_nothing(
        broker: Any, unique_name: Callable[[str], str], tmp_path: Path,
        fault_figures: FaultFigures) -> None:
    ch = LocalClickHouse(workdir=tmp_path / "clickhouse").start()
    host, port = ch.host, ch.tcp_port
    try:
        kafka, app_id, db, envs = _setup(broker, unique_name, tmp_path, host, port)
        log = tmp_path / "workers.log"
        events = traffic(seed=7, people=60)
        parts = slices(arrival_order(events, seed=8))
        end = max(e["occurred_at"] for e in events) + 3 * 24 * 60 * M
        outage = 60.0 if LONG else 20.0
        workers = [start_worker(envs[0], log), start_worker(envs[1], log)]
        try:
            half = len(parts) // 2
            for part in parts[:half]:
                produce(kafka, part)
            wait_pipeline(kafka, app_id, workers, log, timeout=180)
            ch.stop()  # workers keep reading, their writes fail and are retried
            stopped = time.monotonic()
            for part in parts[half:]:
                produce(kafka, part)
            produce_fillers(kafka, end)
            time.sleep(max(0.0, outage - (time.monotonic() - stopped)))
            assert all(w.poll() is None for w in workers), log.read_text()[-3000:]
            ch.start()  # same ports, same data
            started = time.monotonic()
            wait_pipeline(kafka, app_id, workers, log, timeout=300)
            recovery = time.monotonic() - started
            assert "warehouse write failed" in log.read_text(errors="replace")
            _assert_exact(host, port, db, events, end, tmp_path, fault_figures,
                          f"ClickHouse server stopped {outage:.0f} s under traffic",
                          recovery)
        finally:
            for w in workers:
                stop_worker(w)
    finally:
        ch.stop()
