"""The standalone collector (`journeys collector`, the distributed mode's ingest)
SIGKILLed under traffic and started again on its port, with a worker running: every
event it answered 202 for is stored once, and journeys and sessions equal the
reference.

A 202 means the items are on the raw topic (acks=all, docs/ingest.md), so a restart
has nothing of its own to lose. A request in flight at the kill gets no 202 (a refused
or reset connection): the client sends the same request again, so some of its events
may reach the raw topic twice; the stages count each event id once (docs/semantics.md
"Ordering and duplicates"). The traffic is tests/integration/test_stream_journeys.py's
(stitched devices, duplicates, arrival within the lateness), posted slice by slice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from deploy.local.clickhouse import LocalClickHouse
from journeys.settings import KafkaConfig
from tests.faults.report import FaultFigures
from tests.faults.test_kills import _assert_exact, _setup
from tests.integration.ingest_support import free_port, read_topic
from tests.integration.stream_support import (
    ROOT,
    produce_fillers,
    start_worker,
    stop_worker,
    wait_pipeline,
)
from tests.integration.test_stream_journeys import (
    PARTITIONS,
    M,
    arrival_order,
    slices,
    traffic,
)

pytestmark = pytest.mark.kafka_only  # the collector's restart is the same on both brokers


def _start_collector(kafka: KafkaConfig, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_")}
    env["PYTHONUNBUFFERED"] = "1"
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", "collector", "--port", str(port),
             "--bootstrap-servers", kafka.bootstrap_servers,
             "--topic-prefix", kafka.topic_prefix],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _post(http: httpx.Client, url: str, batch: list[dict[str, Any]], log: Path) -> int:
    """POST until 202, resending the same request after a refused or reset connection
    or a 503 (what docs/ingest.md asks of a client); the attempts it took."""
    deadline = time.monotonic() + 120
    attempts = 0
    while True:
        attempts += 1
        try:
            status = http.post(f"{url}/v1/events", json=batch).status_code
        except httpx.TransportError:
            status = 0
        if status == 202:
            return attempts
        assert status in (0, 503), f"{status}:\n{log.read_text(errors='replace')[-3000:]}"
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.1)


def test_a_collector_killed_and_restarted_under_traffic_loses_nothing(
        broker: Any, clickhouse_server: LocalClickHouse, unique_name: Callable[[str], str],
        tmp_path: Path, fault_figures: FaultFigures) -> None:
    host, port = clickhouse_server.host, clickhouse_server.tcp_port
    kafka, app_id, db, envs = _setup(broker, unique_name, tmp_path, host, port)
    log = tmp_path / "collector.log"
    wlog = tmp_path / "worker.log"
    events = traffic(seed=9, people=60)
    parts = slices(arrival_order(events, seed=10))
    end = max(e["occurred_at"] for e in events) + 3 * 24 * 60 * M
    cport = free_port()
    url = f"http://127.0.0.1:{cport}"
    procs = [_start_collector(kafka, cport, log)]
    worker = start_worker(envs[0], wlog)
    rnd = random.Random(3)
    kills = sorted(rnd.sample(range(2, len(parts) - 2, 2), 2))  # not in adjacent slices
    back: list[float] = []  # seconds from each kill until a 202 again

    def kill_and_restart() -> None:
        """SIGKILL while requests are being posted, then start it again on its port."""
        time.sleep(rnd.uniform(0.0, 0.05))
        procs[-1].send_signal(signal.SIGKILL)
        procs[-1].wait(10)
        killed_at.append(time.monotonic())
        time.sleep(0.5)
        procs.append(_start_collector(kafka, cport, log))

    killed_at: list[float] = []
    attempts = 0
    try:
        with httpx.Client(timeout=30) as http:
            killer: threading.Thread | None = None
            for i, part in enumerate(parts):
                if killer is not None and i - 1 in kills:  # done within a slice
                    killer.join(30)
                if i in kills:
                    killer = threading.Thread(target=kill_and_restart, daemon=True)
                    killer.start()
                for k in range(0, len(part), 20):
                    attempts += _post(http, url, part[k:k + 20], log) - 1
                    if killed_at and len(back) < len(killed_at):
                        back.append(time.monotonic() - killed_at[-1])
        assert len(killed_at) == 2, "a kill did not happen"
        produce_fillers(kafka, end)
        wait_pipeline(kafka, app_id, [worker], wlog, timeout=180)
        raw = [orjson.loads(r.value) for r in read_topic(kafka.bootstrap_servers,
                                                         kafka.raw_topic)]
        assert {e["event_id"] for e in events} <= {r["event_id"] for r in raw}
        twice = len(raw) - sum(map(len, parts)) - PARTITIONS  # the fillers
        _assert_exact(host, port, db, events, end, tmp_path, fault_figures,
                      f"collector SIGKILL x2 and restart under traffic ({attempts} "
                      f"requests resent, {twice} records on the raw topic twice)",
                      max(back))
    finally:
        stop_worker(worker)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                p.wait(30)
