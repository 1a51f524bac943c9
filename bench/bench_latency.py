"""Latency under steady traffic (issue #14: p95 produced -> queryable <= 2 s at 5,000
events/s): per sampled event, the wall time from its produce call to its touchpoint row
being queryable in ClickHouse, and (for events with a customer id) to its customer's
session row reaching it.

Starts its own Apache Kafka (deploy/local/kafka.py) and ClickHouse server and W stream
workers (`python -m stream`, bench_stream's environment), waits until a probe event is
queryable (group formed, schema made), then produces bench_stream's generated events
retimed to live traffic (event time = wall clock, bench_recovery.live_events) at
`--rate` events/s for `--seconds`. Every `--sample`-th event's send time is noted; a
poller asks `touchpoints` every `--poll` seconds which of the pending ones are there
now. The touchpoint row is written by the validate stage's sink write (raw -> validate
-> ClickHouse, stream/agents/validate.py), the first hop: this times when an event is
queryable as a touchpoint, not when its session or journey rows include it (the
identity and customer stages come after). Prints the
p50/p95/p99/max latency, the produce rate reached, the workers' CPU per event, the
machine's load average, and loudly how many samples never showed up.

    .venv/bin/python bench/bench_latency.py --rate 5000 --seconds 60 --workers 2
    .venv/bin/python bench/bench_latency.py --rate 500 --seconds 20 --workers 1   # small

The figure only means something if the workers keep up with the rate (the backlog then
grows and the latency with it: the run says so); run it alone on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_recovery import live_events, produce_live, start_workers  # noqa: E402
from bench_stream import broker, cpu_seconds, ensure_topics, stop_workers, worker_env  # noqa: E402

from deploy.local.clickhouse import LocalClickHouse  # noqa: E402
from journeys.settings import KafkaConfig, WarehouseConfig, WorkerSettings  # noqa: E402
from journeys.timeutil import now_ms  # noqa: E402
from warehouse.connect import connect  # noqa: E402

APP_ID = "latency-worker"
DATABASE = "latency"


class Poller:
    """Which pending event ids are queryable now; notes the time each was first seen."""

    def __init__(self, ch: Any) -> None:
        self.wh = connect(WarehouseConfig(backend="server", host=ch.host, port=ch.tcp_port,
                                          database=DATABASE), create_database=False)
        self.pending: dict[str, float] = {}  # event id -> send time (epoch s)
        self.latencies: list[float] = []
        # sampled events that carry a customer id: customer -> [(event time, send time)];
        # in a session row once one of the customer's sessions ends at or after it
        self.in_sessions: dict[str, list[tuple[int, float]]] = {}
        self.session_latencies: list[float] = []

    @property
    def waiting(self) -> int:
        # a copy: the producer thread adds customers while the progress line counts them
        return len(self.pending) + sum(len(v) for v in list(self.in_sessions.values()))

    def poll(self) -> None:
        if not self.waiting:
            return
        rows = self.wh.query(f"SELECT DISTINCT event_id FROM {DATABASE}.touchpoints "
                             "WHERE event_id IN %(ids)s",
                             {"ids": tuple(self.pending)}) if self.pending else []
        seen = time.time()
        for (eid,) in rows:
            sent = self.pending.pop(eid, None)
            if sent is not None:
                self.latencies.append(seen - sent)
        if not self.in_sessions:
            return
        rows = self.wh.query(f"SELECT customer_id, max(ended_at_ms) FROM {DATABASE}.sessions "
                             "WHERE customer_id IN %(ids)s GROUP BY customer_id",
                             {"ids": tuple(self.in_sessions)})
        seen = time.time()
        for customer, ended in rows:
            left = []
            for at, sent in self.in_sessions.get(customer, []):
                if ended >= at:
                    self.session_latencies.append(seen - sent)
                else:
                    left.append((at, sent))
            if left:
                self.in_sessions[customer] = left
            else:
                self.in_sessions.pop(customer, None)

    def close(self) -> None:
        self.wh.close()


def wait_ready(kafka: KafkaConfig, ch: Any, timeout: float) -> None:
    """Until one probe event is queryable: the schema exists and the group has formed."""
    async def send(eid: str) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks=1)
        await producer.start()
        try:
            await producer.send_and_wait(kafka.raw_topic, orjson.dumps({
                "event_id": eid, "type": "page_view", "channel": "web",
                "occurred_at": now_ms(), "customer_id": "probe"}), key=b"probe")
        finally:
            await producer.stop()

    deadline, k = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        try:
            poller = Poller(ch)
        except Exception:  # the worker has not created the database yet
            time.sleep(1.0)
            continue
        try:
            eid = f"probe-{k}"
            asyncio.run(send(eid))
            poller.pending[eid] = time.time()
            until = time.monotonic() + 20
            while poller.pending and time.monotonic() < until:
                time.sleep(0.5)
                with contextlib.suppress(Exception):  # the table is not there yet
                    poller.poll()
            if not poller.pending:
                print(f"ready: a probe event was queryable {poller.latencies[0]:.1f} s after "
                      "it was sent", flush=True)
                return
        finally:
            poller.close()
        k += 1
    raise SystemExit(f"the workers did not get a probe event into ClickHouse in {timeout:.0f} s")


async def traffic(kafka: KafkaConfig, evs: list[dict[str, Any]], rate: float, t0_ms: int,
                  every: int, poller: Poller) -> float:
    """bench_recovery.produce_live in slices of 50 ms, noting every `every`-th send time.
    Returns the seconds the sending took."""
    def note(i: int, e: dict[str, Any]) -> None:
        if i % every == 0:
            poller.pending[e["event_id"]] = time.time()
            if e.get("customer_id"):
                poller.in_sessions.setdefault(e["customer_id"], []).append(
                    (int(e["occurred_at"]), time.time()))

    started = time.time()
    await produce_live(kafka, evs, rate, t0_ms, slice_s=0.05, on_send=note)
    return time.time() - started


async def measure(kafka: KafkaConfig, evs: list[dict[str, Any]], args: argparse.Namespace,
                  t0_ms: int, poller: Poller) -> tuple[float, list[float]]:
    """Traffic and polling together; then polling until every sample is seen or
    --drain seconds pass. Returns (send seconds, 1-minute load averages sampled)."""
    sending = asyncio.create_task(traffic(kafka, evs, args.rate, t0_ms, args.sample, poller))
    loads: list[float] = []
    last_print = time.monotonic()
    drain_until: float | None = None
    while True:
        await asyncio.to_thread(poller.poll)
        loads.append(float(Path("/proc/loadavg").read_text().split()[0]))
        if sending.done() and drain_until is None:
            drain_until = time.monotonic() + args.drain
        if drain_until is not None and (not poller.waiting or time.monotonic() > drain_until):
            break
        if time.monotonic() - last_print > 5:
            last_print = time.monotonic()
            lat = poller.latencies[-200:]
            print(f"  {time.time() - t0_ms / 1000:6.1f} s  samples seen {len(poller.latencies):,}"
                  f", pending {len(poller.pending):,}"
                  + (f", recent median {statistics.median(lat):.2f} s" if lat else ""),
                  flush=True)
        await asyncio.sleep(args.poll)
    return await sending, loads


def quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=5000.0, help="events per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds of traffic")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--sample", type=int, default=50, help="time every N-th event")
    ap.add_argument("--poll", type=float, default=0.1, help="seconds between polls")
    ap.add_argument("--drain", type=float, default=60.0,
                    help="seconds to wait after the traffic for the last samples")
    ap.add_argument("--flush-interval", type=float,
                    default=WorkerSettings.model_fields["flush_interval_s"].default,
                    help="JOURNEYS_FLUSH_INTERVAL_S of the workers (default: the workers' "
                         "default, %(default)s; 0.5 before 2026-12-03)")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()

    n = int(args.rate * args.seconds)
    work = Path(tempfile.mkdtemp(prefix="bench_latency_"))
    with broker("kafka") as b, LocalClickHouse() as ch:
        kafka = KafkaConfig(bootstrap_servers=b.bootstrap_servers, topic_prefix="latency",
                            partitions=args.partitions)
        ensure_topics(kafka)
        env = worker_env(kafka, "kafka", ch, database=DATABASE, app_id=APP_ID,
                         guarantee="at_least_once", flush_interval=args.flush_interval)
        log = (work / "workers.log").open("wb")
        procs = start_workers(args.workers, env, work, log)
        try:
            wait_ready(kafka, ch, 180.0)
            cpu0 = sum(cpu_seconds(p.pid) for p in procs)
            evs = live_events(n, args.rate, 0, args.seed)  # then retimed from now on
            t0_ms = now_ms() + 200
            for e in evs:
                e["occurred_at"] += t0_ms
            print(f"producing {n:,} events at {args.rate:,.0f}/s for {args.seconds:.0f} s, "
                  f"{args.workers} worker(s), {args.partitions} partitions; timing every "
                  f"{args.sample}th", flush=True)
            poller = Poller(ch)
            try:
                sent_s, loads = asyncio.run(measure(kafka, evs, args, t0_ms, poller))
            finally:
                poller.close()
            cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
        finally:
            stop_workers(procs)
    lat = sorted(poller.latencies)
    print(f"\n{n:,} events at {args.rate:,.0f}/s requested, sent in {sent_s:.1f} s "
          f"({n / sent_s:,.0f}/s); {args.workers} worker(s); load average "
          f"{statistics.mean(loads):.2f} mean, {max(loads):.2f} max")
    print(f"  worker CPU during the traffic: {cpu:.1f} s = {cpu * 1e6 / n:,.0f} µs per event")
    if lat:
        print(f"  produced -> touchpoint queryable ({len(lat):,} samples): "
              f"p50 {quantile(lat, 0.5):.2f} s, p95 {quantile(lat, 0.95):.2f} s, "
              f"p99 {quantile(lat, 0.99):.2f} s, max {lat[-1]:.2f} s")
    slat = sorted(poller.session_latencies)
    if slat:
        print(f"  produced -> in its customer's session row ({len(slat):,} samples with a "
              f"customer id): p50 {quantile(slat, 0.5):.2f} s, p95 {quantile(slat, 0.95):.2f} s"
              f", p99 {quantile(slat, 0.99):.2f} s, max {slat[-1]:.2f} s")
    stuck = sum(len(v) for v in poller.in_sessions.values())
    if stuck:
        print(f"  WARNING: {stuck:,} sampled events were in no session row {args.drain:.0f} s "
              "after the traffic ended: left out of the session percentiles above")
    if poller.pending:
        print(f"  WARNING: {len(poller.pending):,} sampled events were NOT queryable "
              f"{args.drain:.0f} s after the traffic ended: the percentiles above leave "
              "them out (the workers did not keep up)")
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
