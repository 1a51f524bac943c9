"""`journeys up` serves live traffic end to end: its collector takes events over HTTP and
its worker processes them; Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ingest.generator import GeneratorConfig, generate_events
from tests.integration.ingest_support import ROOT, free_port


def _metric(text: str, name: str) -> int | None:
    found = re.search(rf"^{name} ([0-9.e+]+)", text, re.MULTILINE)
    return int(float(found.group(1))) if found else None


def test_up_collects_over_http_and_processes(tmp_path: Path) -> None:
    api, collector = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_")}
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", "up", "--port", str(api), "--collector-port",
             str(collector), "--data-dir", str(tmp_path / "up")],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    events = list(generate_events(GeneratorConfig(seed=5, start_ms=1_772_323_200_000,
                                                  max_events=600, visitors_per_hour=500)))
    try:
        with httpx.Client(timeout=30) as http:
            deadline = time.monotonic() + 120
            status = 0
            while status != 202:  # 503 (or no listener) until the broker and topics are up
                assert proc.poll() is None, log.read_text()[-4000:]
                assert time.monotonic() < deadline, log.read_text()[-4000:]
                try:
                    status = http.post(f"http://127.0.0.1:{collector}/v1/events",
                                       json=events[:300]).status_code
                except httpx.TransportError:
                    status = 0
                if status != 202:
                    time.sleep(0.5)
            r = http.post(f"http://127.0.0.1:{collector}/v1/events", json=events[300:])
            assert r.status_code == 202 and r.json()["accepted"] == 300
            seen = None
            while seen != len(events):
                assert time.monotonic() < deadline, f"worker saw {seen}:\n{log.read_text()}"
                time.sleep(0.5)
                try:  # the API may still be starting
                    metrics = http.get(f"http://127.0.0.1:{api}/metrics").text
                except httpx.TransportError:
                    continue
                seen = _metric(metrics, "journeys_events_valid_total")
                assert seen is None or seen <= len(events)
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    printed = re.search(r"collector on \S+ \(pid (\d+)", log.read_text())
    assert printed, log.read_text()
    assert not Path(f"/proc/{printed.group(1)}").exists(), "collector left running"
