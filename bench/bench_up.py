"""`journeys up` end to end (issue #14: import -> journeys queryable >= 15,000 events/s):
the embedded stack (Tansu + chdb + worker + API in one process), fed by `journeys
ingest FILE --wait`, timed until what was imported is queryable.

Writes bench_stream's generated events (the demo generator) to a file, starts `journeys
up --no-collector` on a fresh data directory, waits until its API answers /readyz, then
runs `journeys ingest FILE --wait` aimed at it (found through its stack file, as a user
would). The import phase ends when ingest starts waiting ("waiting until the run is
queryable"); the whole ends when `--wait` returns: every stage caught up and the
warehouse written. Then asks the API (/v1/status) what the warehouse holds. Prints
events/s for the import and end to end, and CPU µs per event of the `journeys up`
process tree (its broker included) and of the importer, and the load average.

    .venv/bin/python bench/bench_up.py --events 100000
    .venv/bin/python bench/bench_up.py --events 20000 --format csv     # small

Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_stream import cpu_seconds, events  # noqa: E402

from deploy.local._proc import free_port  # noqa: E402
from ingest.writers import write_events  # noqa: E402

WAITING = "waiting until the run is queryable"


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and all its live descendants (/proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += cpu_seconds(p)
        todo.extend(children.get(p, []))
    return total


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"`journeys up` exited; see {log}")
            try:
                if http.get(f"{url}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
    raise SystemExit(f"`journeys up` not ready in {timeout:.0f} s; see {log}")


def run_ingest(path: Path, env: dict[str, str], timeout: float, log: Path
               ) -> tuple[float, float | None, float]:
    """(seconds until --wait returned, seconds until the import phase ended, CPU s)."""
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    produced: list[float] = []
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", "ingest", str(path),
                                 "--wait", "--wait-timeout", str(timeout)],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None

        def read() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                out.write(line)
                if WAITING in line and not produced:
                    produced.append(time.perf_counter() - started)
                    print(f"  import done after {produced[0]:.1f} s; waiting until "
                          "queryable …", flush=True)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        code = proc.wait()
        reader.join(10)
    total = time.perf_counter() - started
    if code:
        raise SystemExit(f"`journeys ingest --wait` exited {code}; see {log}")
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (kids.ru_utime - kids0.ru_utime) + (kids.ru_stime - kids0.ru_stime)
    return total, (produced[0] if produced else None), cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--format", choices=("jsonl", "csv", "parquet"), default="jsonl")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds --wait waits")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_up_"))
    path = work / f"events.{args.format}"
    print(f"writing {args.events:,} generated events to {path} …", flush=True)
    write_events(events(args.events, args.seed), path)
    port, data = free_port(), work / "up"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_")}
    up_log = work / "up.log"
    with up_log.open("wb") as out:
        up = subprocess.Popen([sys.executable, "-m", "deploy.cli", "up", "--no-collector",
                               "--port", str(port), "--data-dir", str(data)],
                              cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, up, up_log, 300.0)
        load0 = os.getloadavg()[0]
        print(f"`journeys up` ready (pid {up.pid}); load average {load0:.2f}", flush=True)
        cpu0 = tree_cpu(up.pid)
        total, imported, ingest_cpu = run_ingest(
            path, {**env, "JOURNEYS_DATA_DIR": str(data)}, args.timeout, work / "ingest.log")
        up_cpu = tree_cpu(up.pid) - cpu0
        load1 = os.getloadavg()[0]
        status = httpx.get(f"{url}/v1/status", timeout=60).json()
    finally:
        up.send_signal(signal.SIGINT)  # what Ctrl-C does: it stops what it started
        try:
            up.wait(120)
        except subprocess.TimeoutExpired:
            up.kill()
    n = args.events
    rows = {t["table"]: t["rows"] for t in status["tables"]}
    print(f"\n{n:,} events ({args.format}) through `journeys up` (embedded: Tansu + chdb); "
          f"load average {load0:.2f} before, {load1:.2f} after")
    if imported:
        print(f"  import (journeys ingest): {imported:.1f} s = {n / imported:,.0f} rows/s")
    print(f"  import -> queryable (ingest --wait returned): {total:.1f} s = "
          f"{n / total:,.0f} events/s end to end")
    print(f"  CPU: `journeys up` tree {up_cpu:.1f} s = {up_cpu * 1e6 / n:,.0f} µs per event; "
          f"importer {ingest_cpu:.1f} s = {ingest_cpu * 1e6 / n:,.0f} µs per event")
    print("  warehouse rows (API /v1/status, versions not merged away count): " + ", ".join(
        f"{t} {rows[t]:,}" for t in ("touchpoints", "sessions", "journey_instances")
        if t in rows))
    late = sum(c["count"] for c in status.get("late", []))
    dead = sum(c["count"] for c in status.get("dead_letters", []))
    if late or dead:
        print(f"  WARNING: {late:,} late and {dead:,} dead-lettered events in the warehouse")
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
