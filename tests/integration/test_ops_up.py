"""`journeys up` writes its stack file; `journeys ingest --wait`, `status` and `dlq`
run with no broker settings at all find it, and `ingest --wait` returns only once the
run is in the warehouse (issue #15)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from deploy.stack import STACK_FILE, read_stack
from ingest.generator import GeneratorConfig, generate_events
from tests.integration.ingest_support import ROOT, free_port


def _env(tmp_path: Path) -> dict[str, str]:
    """No JOURNEYS_* setting at all (nothing names a broker), our code on the path, a
    private stack registry (other runs' stacks stay invisible)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_")}
    env.update({"PYTHONPATH": str(ROOT), "JOURNEYS_STACK_REGISTRY": str(tmp_path / "reg")})
    return env


def _cli(tmp_path: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], cwd=tmp_path,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=timeout)


def _wait_running(up: subprocess.Popen[bytes], path: Path, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert up.poll() is None, log.read_text()[-4000:]
        assert time.monotonic() < deadline, log.read_text()[-4000:]
        stack = read_stack(path)
        if stack is not None and stack.state == "running":
            return
        time.sleep(0.5)


def _history(path: Path) -> tuple[int, int]:
    """Generated events plus two rows the import refuses; (valid, refused)."""
    events = list(generate_events(GeneratorConfig(seed=11, start_ms=1_772_323_200_000,
                                                  max_events=800, visitors_per_hour=400)))
    bad = [{**events[0], "event_id": f"bad-{i}", "channel": "fax"} for i in range(2)]
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in [*events, *bad]))
    return len(events), len(bad)


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stdout + result.stderr
    return orjson.loads(result.stdout)


def test_commands_find_up_and_ingest_wait_returns_when_queryable(tmp_path: Path) -> None:
    api = free_port()
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen([sys.executable, "-m", "deploy.cli", "up", "--port", str(api),
                               "--no-collector"], cwd=tmp_path, env=_env(tmp_path),
                              stdout=out, stderr=subprocess.STDOUT)
    stack_path = tmp_path / ".journeys" / STACK_FILE
    try:
        _wait_running(up, stack_path, log)
        valid, refused = _history(tmp_path / "history.jsonl")
        ingest = _cli(tmp_path, "ingest", "history.jsonl", "--wait", "--rejects", str(tmp_path))
        assert ingest.returncode == 0, ingest.stdout + ingest.stderr
        assert "using the `journeys up` stack in" in ingest.stderr, ingest.stderr
        assert "processed: the run's" in ingest.stdout, ingest.stdout
        assert (f"late: 0; dead-lettered by the worker: 0; refused before producing: "
                f"{refused}") in ingest.stdout, ingest.stdout
        assert "2 events of this run are not in the journeys" in " ".join(
            ingest.stderr.split()), ingest.stderr
        # right after it returned: the run is in the warehouse, dead letters archived
        body = httpx.get(f"http://127.0.0.1:{api}/v1/status", timeout=30).json()
        rows = {t["table"]: t["rows"] for t in body["tables"]}
        assert rows["touchpoints"] == valid, body
        assert {c["stage"]: c["count"] for c in body["dead_letters"]} == {"import": refused}
        status = _json(_cli(tmp_path, "status", "--json"))
        assert status["stack"] == str((tmp_path / ".journeys").resolve())
        assert status["caught_up"] and status["lag"] == 0, status
        assert status["warehouse"]["dead_letters"] == {"import": refused}
        assert status["event_time"]["stage_lag_seconds"], status  # from the stack's metrics
        letters = _json(_cli(tmp_path, "dlq", "list", "--json", "--reason", "FAX"))
        assert sorted(x["event_id"] for x in letters) == ["bad-0", "bad-1"]
        assert all(x["stage"] == "import" and x["redriven"] == "-" for x in letters)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait(10)
    stopped = read_stack(stack_path)
    assert stopped is not None and stopped.state == "stopped", log.read_text()[-3000:]
    assert not list((tmp_path / "reg").glob("*.json")), "registry entry left behind"
    nothing = _cli(tmp_path, "status", timeout=60)  # stopped: back to the default broker
    assert nothing.returncode != 0
    assert "no running `journeys up` found" in " ".join((nothing.stdout + nothing.stderr).split())
