"""Collector throughput: events/s at batch 100 and 1000, and where the CPU goes.

Starts its own embedded broker (127.0.0.1, stopped at the end), runs the collector
in this process on a uvicorn thread, and drives it from load-client subprocesses, so
this process's CPU is the collector's alone. The kafka-python share is measured, not
estimated: the producer's I/O thread (per-thread CPU from /proc) plus the CPU spent
inside `KafkaProducer.send()` on the request threads (thread_time around each call).
With `--processes N` it also runs N collector processes on N ports (the way past one
process) and reports their total rate.

    .venv/bin/python bench/bench_collector.py            # ~1–2 minutes, bounded
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from kafka import KafkaProducer
from kafka.producer.sender import Sender

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy.local.broker import LocalBroker  # noqa: E402
from ingest.collector import collector_tuning, create_collector_app  # noqa: E402
from ingest.producer import TouchpointProducer  # noqa: E402
from journeys.settings import CollectorSettings, KafkaConfig  # noqa: E402
from journeys.topics import ensure_journey_topics  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
CLIENT = """
import sys, threading, time, httpx, orjson
sys.path.insert(0, {root!r})
from ingest.generator import GeneratorConfig, generate_events
urls, batch, total, threads = {urls!r}, {batch}, {total}, {threads}
events = list(generate_events(GeneratorConfig(seed=1, start_ms=1772323200000,
                                              max_events=max(batch * 20, 2000),
                                              visitors_per_hour=5000)))
bodies = [orjson.dumps(events[i:i + batch]) for i in range(0, len(events) - batch + 1, batch)]
sent = [0] * threads
statuses = {{}}
def run(k):
    with httpx.Client(timeout=60, headers={{"content-type": "application/json"}}) as c:
        i = 0
        while sent[k] < total // threads:
            r = c.post(urls[(k + i) % len(urls)], content=bodies[i % len(bodies)])
            statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
            if r.status_code == 202:
                sent[k] += r.json()["accepted"]
            i += 1
started = time.perf_counter()
ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
print(orjson.dumps({{"events": sum(sent), "seconds": time.perf_counter() - started,
                    "statuses": statuses}}).decode())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu(pid: int | str, tid: int | None = None) -> float:
    """CPU seconds (user + system) of a process, or of one of its threads."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class TimedProducer(KafkaProducer):
    """KafkaProducer that adds the CPU time spent in send() on the calling threads."""

    send_cpu = 0.0
    _lock = threading.Lock()

    def send(self, *args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return super().send(*args, **kwargs)
        finally:
            spent = time.thread_time() - start
            with TimedProducer._lock:
                TimedProducer.send_cpu += spent


def _drive(urls: list[str], batch: int, total: int, threads: int) -> dict[str, Any]:
    code = CLIENT.format(root=str(ROOT), urls=urls, batch=batch, total=total, threads=threads)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"load client failed (exit {proc.returncode})")
    return orjson.loads(out.strip().splitlines()[-1])


def bench_in_process(kafka: KafkaConfig, broker_pid: int, batch: int, total: int,
                     threads: int) -> dict[str, Any]:
    settings = CollectorSettings(kafka=kafka, port=_free_port())
    producer = TouchpointProducer(kafka, collector_tuning(settings), factory=TimedProducer)
    server = uvicorn.Server(uvicorn.Config(create_collector_app(settings, producer),
                                           host="127.0.0.1", port=settings.port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{settings.port}/v1/events"
    _drive([url], batch, batch * 20, 2)  # warm-up: connections, metadata, JIT caches
    sender = next(t for t in threading.enumerate() if isinstance(t, Sender))
    me = os.getpid()
    cpu0, snd0, brk0 = _cpu(me), _cpu(me, sender.native_id), _cpu(broker_pid)
    send0 = TimedProducer.send_cpu
    result = _drive([url], batch, total, threads)
    cpu = _cpu(me) - cpu0
    io_thread = _cpu(me, sender.native_id) - snd0
    in_send = TimedProducer.send_cpu - send0
    broker_cpu = _cpu(broker_pid) - brk0
    server.should_exit = True
    thread.join(10)
    producer.close()
    secs = result["seconds"]
    return {"batch": batch, "events_per_s": result["events"] / secs,
            "collector_cpu_pct": 100 * cpu / secs,
            "producer_share_pct": 100 * (io_thread + in_send) / cpu,
            "producer_io_thread_pct": 100 * io_thread / secs,
            "broker_cpu_pct": 100 * broker_cpu / secs, "statuses": result["statuses"]}


def bench_processes(kafka: KafkaConfig, n: int, batch: int, total: int,
                    threads: int) -> dict[str, Any]:
    env = dict(os.environ, JOURNEYS_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
               JOURNEYS_KAFKA__TOPIC_PREFIX=kafka.topic_prefix, PYTHONPATH=str(ROOT))
    ports = [_free_port() for _ in range(n)]
    procs = [subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory",
                               "ingest.collector:app_from_env", "--host", "127.0.0.1",
                               "--port", str(p), "--log-level", "warning", "--no-access-log"],
                              env=env, cwd=ROOT) for p in ports]
    try:
        for p in ports:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", p), 0.2).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "collector did not start"
                    time.sleep(0.1)
        urls = [f"http://127.0.0.1:{p}/v1/events" for p in ports]
        _drive(urls, batch, batch * 20, 2)
        cpu0 = [_cpu(p.pid) for p in procs]
        result = _drive(urls, batch, total, threads)
        cpu = sum(_cpu(p.pid) - c for p, c in zip(procs, cpu0, strict=True))
    finally:
        for p in procs:  # only the processes started here, by PID
            p.terminate()
        for p in procs:
            p.wait(15)
    secs = result["seconds"]
    return {"processes": n, "batch": batch, "events_per_s": result["events"] / secs,
            "collectors_cpu_pct": 100 * cpu / secs, "statuses": result["statuses"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per run")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--processes", type=int, default=2, help="collector processes "
                        "for the multi-process run (0: skip it)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; broker: embedded Tansu; client: httpx, "
          f"{args.clients} concurrent requests, separate process")
    print("load average before: {:.2f} {:.2f} {:.2f} (other load skews the figures)".format(
        *os.getloadavg()))
    with LocalBroker() as broker:
        kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers,
                            topic_prefix=f"bench{os.getpid()}", partitions=4)
        ensure_journey_topics(kafka)
        assert broker.pid is not None
        for batch in (100, 1000):
            r = bench_in_process(kafka, broker.pid, batch, args.events, args.clients)
            print(f"1 process, batch {batch:>4}: {r['events_per_s']:>8,.0f} events/s | "
                  f"collector CPU {r['collector_cpu_pct']:.0f}% of a core, kafka-python "
                  f"{r['producer_share_pct']:.0f}% of it (I/O thread "
                  f"{r['producer_io_thread_pct']:.0f}%) | broker CPU "
                  f"{r['broker_cpu_pct']:.0f}% | HTTP {r['statuses']}")
        if args.processes > 1:
            r = bench_processes(kafka, args.processes, 1000, args.events, args.clients)
            print(f"{r['processes']} processes, batch 1000: {r['events_per_s']:>8,.0f} "
                  f"events/s | collectors CPU {r['collectors_cpu_pct']:.0f}% | "
                  f"HTTP {r['statuses']}")


if __name__ == "__main__":
    main()
