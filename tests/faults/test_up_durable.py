"""`journeys up` acknowledges only what it keeps: a burst of events answered 202, the
process SIGKILLed right after the last 202, `up` started again on the same data dir:
every acknowledged event is in the warehouse exactly once, and journeys and sessions
equal the reference (what an uninterrupted run gives: tests/faults/test_kills.py).

The embedded broker keeps nothing over a stop; what holds this is the collector's spool
(ingest.spool: fsync'd before produce) replayed at the next start. The first run is
killed with half of the events processed (rows of them already in the warehouse, some
provisional) and the rest not yet: the replay rewrites the first half's rows unchanged
and brings the rest. Also held: the collector answers 503 until the worker runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from kafka.partitioner.default import murmur2

from ingest.generator import GeneratorConfig, generate_events
from journeys import envvars
from journeys.definitions import load_definitions
from journeys.events import parse_occurred_at
from journeys.settings import KafkaConfig
from stream.engine.identity import JUNK_IDS
from tests.faults.report import FaultFigures
from tests.integration.ingest_support import ROOT, free_port
from tests.integration.stream_support import row_view, wait_pipeline
from tests.reference.stitching_ref import split_reference

PARTITIONS = 4  # the embedded stack's default
LATENESS_MS = 300_000  # the default allowed lateness
DAY = 86_400_000
BATCH = 100

# Reads the embedded warehouse in a process of its own: chdb allows one data directory
# per process, and this test process may hold another (tests/services.py chdb_path).
_DUMP = """
import sys, orjson
from journeys.settings import WarehouseConfig
from tests.integration.stream_support import journeys_in, sessions_in
from warehouse.connect import connect
wh = connect(WarehouseConfig(backend="chdb", path=sys.argv[1]), create_database=False)
ids = [r[0] for r in wh.query(f"SELECT event_id FROM {wh.database}.touchpoints FINAL")]
dead = [r[0] for r in wh.query(f"SELECT event_id FROM {wh.database}.dead_letters "
                               "WHERE stage = %(stage)s", {"stage": sys.argv[2]})]
sys.stdout.buffer.write(orjson.dumps({"journeys": list(journeys_in(wh).values()),
                                      "sessions": sorted(sessions_in(wh)), "ids": ids,
                                      "dead": dead}, default=str))
"""


def _traffic() -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(events, fillers, filler time): generated multi-channel traffic with stitched
    devices, then one filler per raw partition (the collector's murmur2) and per
    by-customer partition (crc32) far in the future, so every deadline passes at the
    fillers' watermark whatever the wall clock (source idleness is off)."""
    events = list(generate_events(GeneratorConfig(
        seed=23, start_ms=1_772_323_200_000, max_events=3000, visitors_per_hour=1500,
        id_prefix="d")))
    end = max(parse_occurred_at(e["occurred_at"]) for e in events) + 3 * DAY
    fillers: list[dict[str, Any]] = []
    raw: set[int] = set()
    internal: set[int] = set()
    k = 0
    while len(raw) < PARTITIONS or len(internal) < PARTITIONS:
        key = f"filler-{k}".encode()
        r, c = (murmur2(key) & 0x7FFFFFFF) % PARTITIONS, zlib.crc32(key) % PARTITIONS
        if r not in raw or c not in internal:
            raw.add(r)
            internal.add(c)
            fillers.append({"event_id": f"fill-{k}", "type": "page_view", "channel": "web",
                            "occurred_at": end, "customer_id": key.decode()})
        k += 1
    return events, fillers, end


def _env(data_dir: Path) -> dict[str, str]:
    """No JOURNEYS_ settings of the caller; a stack registry of this test's own, so no
    other stack on the machine is found (deploy.stack)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_")}
    env.update({"PYTHONUNBUFFERED": "1", envvars.DATA_DIR: str(data_dir),
                envvars.STACK_REGISTRY: str(data_dir.parent / "stacks")})
    return env


def _start_up(data_dir: Path, log: Path, api: int, collector: int) -> subprocess.Popen[bytes]:
    env = _env(data_dir)
    env.update({envvars.WORKER_SOURCE_IDLE: str(DAY), envvars.WORKER_FLUSH_INTERVAL: "0.3"})
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", "up", "--port", str(api), "--collector-port",
             str(collector), "--data-dir", str(data_dir)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-5000:]


def _wait_for(log: Path, proc: subprocess.Popen[bytes], pattern: str,
              timeout: float = 180) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found
        assert proc.poll() is None, f"`up` exited:\n{_tail(log)}"
        assert time.monotonic() < deadline, f"no {pattern!r} in {timeout} s:\n{_tail(log)}"
        time.sleep(0.2)


def _post(http: httpx.Client, url: str, batch: list[dict[str, Any]],
          proc: subprocess.Popen[bytes], log: Path) -> list[int]:
    """POST until 202 (503s and refused connections retried); the statuses seen."""
    seen: list[int] = []
    deadline = time.monotonic() + 180
    while not seen or seen[-1] != 202:
        assert proc.poll() is None, f"`up` exited:\n{_tail(log)}"
        assert time.monotonic() < deadline, f"no 202 after {seen[-5:]}:\n{_tail(log)}"
        try:
            seen.append(http.post(f"{url}/v1/events", json=batch).status_code)
        except httpx.TransportError:
            seen.append(0)
        if seen[-1] != 202:
            assert seen[-1] in (0, 503), f"{seen[-1]}:\n{_tail(log)}"
            time.sleep(0.2)
    return seen


def _metric(http: httpx.Client, api: int, name: str) -> int:
    try:
        text = http.get(f"http://127.0.0.1:{api}/metrics").text
    except httpx.TransportError:
        return 0
    found = re.search(rf"^{name} ([0-9.e+]+)", text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def _first_run(data_dir: Path, log: Path, batches: list[list[dict[str, Any]]]) -> None:
    """Half of the batches, until the worker has written rows of them; the other half
    in a burst, and a SIGKILL right after its last 202."""
    api, port = free_port(), free_port()
    proc = _start_up(data_dir, log, api, port)
    url = f"http://127.0.0.1:{port}"
    half = len(batches) // 2
    try:
        with httpx.Client(timeout=30) as http:
            _wait_for(log, proc, r"collector on \S+ \(pid")  # listening, gate closed
            assert http.get(f"{url}/readyz").status_code == 503
            seen = _post(http, url, batches[0], proc, log)
            assert seen[0] == 503, seen  # the worker was not running yet
            assert "every partition assigned" in log.read_text(), _tail(log)
            assert http.get(f"{url}/readyz").status_code == 200
            for batch in batches[1:half]:
                _post(http, url, batch, proc, log)
            deadline = time.monotonic() + 180
            while _metric(http, api, "journeys_session_rows_written_total") == 0:
                assert time.monotonic() < deadline, _tail(log)
                time.sleep(0.3)
            for batch in batches[half:]:
                _post(http, url, batch, proc, log)
            proc.send_signal(signal.SIGKILL)  # right after the last 202
            proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    collector_pid = _wait_for(log, proc, r"collector on \S+ \(pid (\d+)").group(1)
    deadline = time.monotonic() + 30  # it dies with its parent (PR_SET_PDEATHSIG)
    while Path(f"/proc/{collector_pid}").exists():
        assert time.monotonic() < deadline, "the killed run's collector lives on"
        time.sleep(0.1)


def _second_run(data_dir: Path, log: Path, acknowledged: int) -> float:
    """`up` again on the same data dir: replay, process everything, stop cleanly; the
    seconds from its start until every stage caught up (the recovery)."""
    started = time.monotonic()
    proc = _start_up(data_dir, log, free_port(), free_port())
    try:
        broker = _wait_for(log, proc, r"broker \(Tansu, in memory\) on (\S+)")
        replayed = _wait_for(log, proc, r"replayed ([\d,]+) records\s+from the spool")
        assert int(replayed.group(1).replace(",", "")) >= acknowledged, _tail(log)
        _wait_for(log, proc, r"ready\S*: dashboard")
        kafka = KafkaConfig(bootstrap_servers=broker.group(1), partitions=PARTITIONS)
        wait_pipeline(kafka, "journeys-worker", [proc], log, timeout=300)
        return time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


@pytest.mark.timeout(900)
def test_sigkill_right_after_the_last_202_loses_nothing(
        tmp_path: Path, fault_figures: FaultFigures) -> None:
    events, fillers, end = _traffic()
    wire = events + fillers
    batches = [wire[i:i + BATCH] for i in range(0, len(wire), BATCH)]
    rejected = [f"bad-{i}" for i in range(0, len(batches), 3)]  # dead letters: spooled too
    for i, event_id in zip(range(0, len(batches), 3), rejected, strict=True):
        batches[i].append({"event_id": event_id, "type": "product_view", "channel": "fax",
                           "occurred_at": end, "anonymous_id": "a"})
    data_dir = tmp_path / "up"
    _first_run(data_dir, tmp_path / "up1.log", batches)
    recovery = _second_run(data_dir, tmp_path / "up2.log", len(wire) + len(rejected))
    _check(data_dir, events, wire, end, rejected, "collector", fault_figures,
           "`journeys up` SIGKILLed right after the last 202", recovery)


def _check(data_dir: Path, events: list[dict[str, Any]], wire: list[dict[str, Any]],
           end: int, rejected: list[str], stage: str, report: FaultFigures, fault: str,
           recovery_s: float) -> None:
    """Report what the crash cost (tests/faults/report.py), then hold every acknowledged
    event stored once, journeys and sessions equal to the reference, each dead letter of
    `stage` archived once."""
    dump = subprocess.run([sys.executable, "-c", _DUMP, str(data_dir / "warehouse"), stage],
                          cwd=ROOT, capture_output=True, timeout=120)
    assert dump.returncode == 0, dump.stderr.decode()[-3000:]
    got = orjson.loads(dump.stdout)
    ids = got["ids"]
    want, want_sessions = split_reference(load_definitions(), events, set(JUNK_IDS),
                                          end - LATENESS_MS)
    journeys = {r[0]: row_view(tuple(r)) for r in got["journeys"]}
    sessions = {tuple(s) for s in got["sessions"]}
    equal = journeys == want and sessions == want_sessions
    report(fault, acknowledged=len(wire) + len(rejected),
           lost=len({e["event_id"] for e in wire} - set(ids)),
           doubled=len(ids) - len(set(ids)) + max(0, sum(s[3] for s in sessions)
                                                  - sum(s[3] for s in want_sessions)),
           recovery_s=recovery_s, note="journeys and sessions = reference" if equal
           else "journeys or sessions differ from the reference")
    assert len(ids) == len(set(ids)), "a touchpoint stored twice"
    assert set(ids) == {e["event_id"] for e in wire}, (
        f"{len({e['event_id'] for e in wire} - set(ids))} acknowledged events missing")
    missing, extra = set(want) - set(journeys), set(journeys) - set(want)
    assert not missing and not extra, f"missing {len(missing)}, extra {len(extra)}"
    bad = [iid for iid in want if journeys[iid] != want[iid]]
    assert not bad, f"{len(bad)} of {len(want)} instances differ, e.g. {bad[:3]}"
    assert sessions == want_sessions
    assert sorted(got["dead"]) == sorted(rejected), "each dead letter archived once"


def _ingest(data_dir: Path, path: Path, log: Path) -> str:
    """`journeys ingest FILE` aimed at the stack through its stack file; its stderr."""
    done = subprocess.run([sys.executable, "-m", "deploy.cli", "ingest", str(path),
                           "--rejects", str(path.parent)],
                          cwd=ROOT, env=_env(data_dir), capture_output=True, timeout=300)
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 0, f"{err[-3000:]}\n{done.stdout.decode()[-2000:]}\n{_tail(log)}"
    return err


@pytest.mark.timeout(900)
def test_sigkill_right_after_an_import_returns_loses_nothing(
        tmp_path: Path, fault_figures: FaultFigures) -> None:
    """`journeys ingest` into a running `up` (found through its stack file): the
    importer spools what it produces before it reports success, so a SIGKILL of `up`
    right after it returns loses nothing; the replay brings it back exactly once."""
    events, fillers, end = _traffic()
    half = len(events) // 2
    rejected = [f"bad-{i}" for i in range(6)]
    bad = [{"event_id": r, "type": "product_view", "channel": "fax", "occurred_at": end,
            "anonymous_id": "a"} for r in rejected]
    files = [tmp_path / "first.jsonl", tmp_path / "second.jsonl"]
    files[0].write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events[:half] + bad[:3]))
    files[1].write_bytes(b"".join(orjson.dumps(e) + b"\n"
                                  for e in events[half:] + fillers + bad[3:]))
    data_dir, log = tmp_path / "up", tmp_path / "up1.log"
    api = free_port()
    proc = _start_up(data_dir, log, api, free_port())
    try:
        _wait_for(log, proc, r"ready\S*: dashboard")
        first = _ingest(data_dir, files[0], log)
        assert "spool" in first, first  # it says where it keeps what it sends
        with httpx.Client(timeout=30) as http:
            deadline = time.monotonic() + 180
            while _metric(http, api, "journeys_session_rows_written_total") == 0:
                assert time.monotonic() < deadline, _tail(log)
                time.sleep(0.3)
        _ingest(data_dir, files[1], log)
        proc.send_signal(signal.SIGKILL)  # right after the importer returned
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    wire = events + fillers
    recovery = _second_run(data_dir, tmp_path / "up2.log", len(wire) + len(rejected))
    _check(data_dir, events, wire, end, rejected, "import", fault_figures,
           "`journeys up` SIGKILLed right after an import returned", recovery)
