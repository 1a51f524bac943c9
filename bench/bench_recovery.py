"""Lag recovery after a worker is SIGKILLed under steady live traffic, and exactness.

Starts its own broker (Apache Kafka by default, `--broker tansu`) and a ClickHouse
server, starts W workers (one consumer group), then produces generated touchpoints at a
steady rate with event time = wall time (live traffic). After `--kill-at` seconds it
SIGKILLs one worker (not restarted: the others take its partitions over) and keeps
producing until `--duration`. Every 0.5 s it samples each stage's consumer lag (log end
minus the group's committed offsets, summed over partitions). Prints the lag before the
kill, its peak after, and the recovery time: from the kill until the lag is back under
its pre-kill maximum (at least one second of traffic) and stays there for 5 s. At the
end one far-future event per partition closes everything; sessions and journey
instances are compared with the reference (tests/reference) and touchpoints with what
was produced: nothing lost, nothing doubled.

    .venv/bin/python bench/bench_recovery.py                  # 2 workers, 1,000 events/s
    .venv/bin/python bench/bench_recovery.py --workers 3 --rate 800 --broker tansu

Run it alone on the machine: the rate must stay below what the survivors can do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_stream import (  # noqa: E402
    LATENESS_MS,
    broker,
    ensure_topics,
    events,
    fillers,
    late_events,
    references,
    results,
    stop_workers,
    wait_done,
)

from deploy.local.clickhouse import LocalClickHouse  # noqa: E402
from journeys.settings import KafkaConfig, WarehouseConfig  # noqa: E402
from journeys.timeutil import now_ms  # noqa: E402
from stream.agents.app import committed_stages  # noqa: E402
from warehouse.connect import connect  # noqa: E402

APP_ID = "recovery-worker"
SAMPLE_S = 0.5
STABLE_S = 5.0


class LagProbe:
    """Each stage's lag: sum over partitions of (log end - group committed offset)."""

    def __init__(self, kafka: KafkaConfig, kind: str) -> None:
        self.kafka, self.kind = kafka, kind
        self.consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers,
                                      enable_auto_commit=False)
        self.stages = [(t, g) for t, g in committed_stages(kafka, APP_ID)
                       if t != kafka.dead_letter_topic]
        self.groups = {g: KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=g,
                                        enable_auto_commit=False) for _t, g in self.stages}

    def ends(self, topic: str) -> dict[int, int]:
        if self.kind == "tansu":  # its ListOffsets answers short of the end
            from bench_stream import end_offsets
            return end_offsets(self.kafka.bootstrap_servers, topic, self.kafka.partitions)
        tps = [TopicPartition(topic, p) for p in range(self.kafka.partitions)]
        return {tp.partition: int(o) for tp, o in self.consumer.end_offsets(tps).items()}

    def sample(self) -> dict[str, int]:
        out = {}
        for topic, group in self.stages:
            ends = self.ends(topic)
            done = {p: self.groups[group].committed(TopicPartition(topic, p)) or 0
                    for p in ends}
            out[topic.split(".")[-1]] = sum(max(0, e - max(done.get(p, 0), 0))
                                            for p, e in ends.items())
        return out

    def close(self) -> None:
        self.consumer.close()
        for c in self.groups.values():
            c.close()


async def produce_live(kafka: KafkaConfig, evs: list[dict[str, Any]], rate: float,
                       t0_ms: int, *, slice_s: float = 0.1,
                       on_send: Callable[[int, dict[str, Any]], None] | None = None) -> None:
    """Send event i at t0 + i/rate (its occurred_at), in slices of `slice_s`; `on_send`
    is called just before each send (bench_latency notes send times)."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all",
                                linger_ms=5)
    await producer.start()
    try:
        i = 0
        while i < len(evs):
            due = int((now_ms() - t0_ms) * rate / 1000) + 1
            futures = []
            while i < min(due, len(evs)):
                e = evs[i]
                key = (e["customer_id"] or e["anonymous_id"] or "x").encode()
                if on_send is not None:
                    on_send(i, e)
                futures.append(await producer.send(kafka.raw_topic, orjson.dumps(e), key=key))
                i += 1
            if futures:
                await asyncio.gather(*futures)
            await asyncio.sleep(slice_s)
    finally:
        await producer.stop()


def live_events(n: int, rate: float, t0_ms: int, seed: int) -> list[dict[str, Any]]:
    """The bench's generated events (stories, stitching), retimed to one every 1/rate s
    from t0 in their order: live traffic whose event time is the wall clock."""
    out = []
    for i, e in enumerate(events(n, seed)):
        out.append({**e, "occurred_at": t0_ms + int(i * 1000 / rate)})
    return out


def recovery(samples: list[tuple[float, int]], kill_at: float, rate: float
             ) -> tuple[int, int, float | None]:
    """(max lag before the kill, peak after, seconds from the kill until the lag stays
    under max(pre-kill max, one second of traffic) for STABLE_S)."""
    before = max((lag for t, lag in samples if kill_at - 30 <= t < kill_at), default=0)
    after = [(t, lag) for t, lag in samples if t >= kill_at]
    peak = max((lag for _t, lag in after), default=0)
    limit = max(before, int(rate))
    since = None
    for t, lag in after:
        if lag <= limit:
            since = t if since is None else since
            if t - since >= STABLE_S:
                return before, peak, since - kill_at
        else:
            since = None
    return before, peak, None


def start_workers(n: int, env: dict[str, str], work: Path, log: Any) -> list[subprocess.Popen]:
    cmd = [sys.executable, "-m", "stream", "--loglevel", "info"]
    return [subprocess.Popen(cmd, cwd=ROOT, env={**env, "JOURNEYS_DATA_DIR": str(work / f"w{i}")},
                             stdout=log, stderr=subprocess.STDOUT) for i in range(n)]


def worker_env(kafka: KafkaConfig, kind: str, ch: Any, guarantee: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_")}
    env.update({
        "JOURNEYS_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "JOURNEYS_KAFKA__IDEMPOTENT_PRODUCER": str(kind == "kafka").lower(),
        "JOURNEYS_KAFKA__PROCESSING_GUARANTEE": guarantee,
        "JOURNEYS_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
        "JOURNEYS_KAFKA__PARTITIONS": str(kafka.partitions),
        "JOURNEYS_WAREHOUSE__BACKEND": "server",
        "JOURNEYS_WAREHOUSE__HOST": ch.host,
        "JOURNEYS_WAREHOUSE__PORT": str(ch.tcp_port),
        "JOURNEYS_WAREHOUSE__DATABASE": "recovery",
        "JOURNEYS_APP_ID": APP_ID,
        "JOURNEYS_FLUSH_INTERVAL_S": "0.5",
        "JOURNEYS_ALLOWED_LATENESS_MS": str(LATENESS_MS),
        "JOURNEYS_SOURCE_IDLE_MS": str(86_400_000),
    })
    return env


async def run_traffic(probe: LagProbe, kafka: KafkaConfig, evs: list[dict[str, Any]],
                      args: argparse.Namespace, procs: list[subprocess.Popen], t0_ms: int
                      ) -> tuple[list[tuple[float, int]], float]:
    """Produce, sample the lag, kill one worker at kill_at; returns (samples, kill time)."""
    traffic = asyncio.create_task(produce_live(kafka, evs, args.rate, t0_ms))
    samples: list[tuple[float, int]] = []
    killed_at = -1.0
    while not traffic.done() or (samples and time.time() - t0_ms / 1000 < args.duration + 30):
        t = time.time() - t0_ms / 1000
        if killed_at < 0 and t >= args.kill_at:
            os.kill(procs[-1].pid, signal.SIGKILL)
            killed_at = t
            print(f"  {t:6.1f} s  SIGKILL worker {procs[-1].pid}", flush=True)
        lags = await asyncio.to_thread(probe.sample)
        samples.append((t, sum(lags.values())))
        if len(samples) % 10 == 0:
            print(f"  {t:6.1f} s  lag " + " ".join(f"{k}={v:,}" for k, v in lags.items()),
                  flush=True)
        await asyncio.sleep(SAMPLE_S)
    await traffic
    return samples, killed_at


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rate", type=float, default=1000.0, help="events per second")
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of traffic")
    ap.add_argument("--kill-at", type=float, default=45.0, help="seconds into the traffic")
    ap.add_argument("--broker", choices=("kafka", "tansu"), default="kafka")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--guarantee", choices=("at_least_once", "exactly_once"),
                    default="at_least_once", help="Faust processing_guarantee of the workers")
    args = ap.parse_args()
    if args.workers < 2:
        raise SystemExit("--workers must be >= 2: one is killed, the others take over")

    n = int(args.rate * args.duration)
    work = Path(tempfile.mkdtemp(prefix="bench_recovery_"))
    with broker(args.broker) as b, LocalClickHouse() as ch:
        kafka = KafkaConfig(bootstrap_servers=b.bootstrap_servers, topic_prefix="recovery",
                            partitions=args.partitions)
        ensure_topics(kafka)
        log_path = work / "workers.log"
        log = log_path.open("wb")
        procs = start_workers(args.workers, worker_env(kafka, args.broker, ch, args.guarantee), work, log)
        probe = LagProbe(kafka, args.broker)
        try:
            time.sleep(15)  # the group forms (traffic before that is only a backlog)
            t0_ms = now_ms()
            evs = live_events(n, args.rate, t0_ms, args.seed)
            print(f"producing {n:,} events at {args.rate:,.0f}/s for {args.duration:.0f} s, "
                  f"{args.workers} workers, {args.partitions} partitions, {args.broker}",
                  flush=True)
            samples, killed_at = asyncio.run(run_traffic(probe, kafka, evs, args, procs,
                                                         t0_ms))
            end = evs[-1]["occurred_at"] + 3 * 86_400_000
            asyncio.run(_fill(kafka, end))
            alive = [p for p in procs if p.poll() is None]
            wait_done(kafka, APP_ID, alive, time.perf_counter(), 600, log_path)
        finally:
            probe.close()
            stop_workers(procs)
        got = _warehouse(ch)
    report(args, evs, got, samples, killed_at, late_events(log_path, [p.pid for p in procs]),
           end - LATENESS_MS)


async def _fill(kafka: KafkaConfig, at_ms: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for p, e in fillers(at_ms, kafka.partitions):
            await producer.send_and_wait(kafka.raw_topic, orjson.dumps(e), partition=p)
    finally:
        await producer.stop()


def _warehouse(ch: Any) -> tuple[set[Any], dict[str, str], int, int]:
    """results() plus touchpoint rows before merges (a doubled write would show there)."""
    sessions, instances, _distinct = results(ch, "recovery")
    wh = connect(WarehouseConfig(backend="server", host=ch.host, port=ch.tcp_port,
                                 database="recovery"), create_database=False)
    try:
        rows, distinct = (int(x) for x in wh.query(
            "SELECT count(), uniqExact(event_id) FROM recovery.touchpoints "
            "WHERE event_id NOT LIKE 'fill-%'")[0])
    finally:
        wh.close()
    return sessions, instances, rows, distinct


def report(args: argparse.Namespace, evs: list[dict[str, Any]],
           got: tuple[set[Any], dict[str, str], int, int], samples: list[tuple[float, int]],
           killed_at: float, late: int, watermark: int) -> None:
    sessions, instances, rows, distinct = got
    before, peak, took = recovery(samples, killed_at, args.rate)
    print(f"\n{len(evs):,} events at {args.rate:,.0f}/s, {args.workers} workers -> "
          f"{args.workers - 1} after the SIGKILL at {killed_at:.1f} s, {args.broker}")
    print(f"  lag (records, all stages): max {before:,} in the 30 s before the kill, "
          f"peak {peak:,} after it")
    print("  recovery: " + (f"{took:.1f} s from the kill until the lag stays under "
                            f"{max(before, int(args.rate)):,} for {STABLE_S:.0f} s"
                            if took is not None else "NOT recovered while traffic ran"))
    print(f"  touchpoints: {distinct:,} distinct of {len(evs):,} produced "
          f"({rows - distinct:,} extra rows before merges); late events: {late:,}")
    ref_sessions, ref_instances = references(evs, watermark)[
        "split at the link (the product's semantics)"]
    same = sum(1 for i, s in ref_instances.items() if instances.get(i) == s)
    print(f"  sessions {len(sessions & ref_sessions):,} identical of {len(ref_sessions):,} "
          f"(got {len(sessions):,}); instances {same:,} identical of {len(ref_instances):,} "
          f"(got {len(instances):,})")


if __name__ == "__main__":
    main()
