"""Stream throughput end to end, and exactness: raw topic -> ClickHouse, W workers.

Starts its own broker (Apache Kafka by default, `--broker tansu` for the embedded one)
and a local ClickHouse server (127.0.0.1, stopped at the end), pre-produces N generated
multi-channel touchpoints (the demo generator: customers, anonymous visitors who
identify, both journeys; keys scattered over the raw partitions) plus one far-future
filler event per raw partition (every watermark passes every deadline), then starts W
stream workers (`python -m stream`, one consumer group) and times them until every
stage has processed everything, stage by stage (each stage commits only after its
writes). Prints events/s, the workers' CPU time per event, late events, and sessions
and journey instances against the reference (tests/reference: every device event
belongs to its customer, full retroactivity; a few devices of the demo sample had a
journey or session closed before their login, which stays under the device by the
product's semantics, docs/semantics.md).

    .venv/bin/python bench/bench_stream.py                       # 200k events, 2 workers
    .venv/bin/python bench/bench_stream.py --events 50000 --workers 1 --partitions 4

Run it alone on the machine (no tests or other benchmarks): CPU figures are per event.
BENCH_PYSPY=DIR samples each worker with py-spy (bench/profile_report.py reads it);
BENCH_PROFILE=DIR runs each under cProfile (wall time, asyncio waits included).
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
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy.local.clickhouse import LocalClickHouse  # noqa: E402
from ingest.generator import GeneratorConfig, generate_events  # noqa: E402
from journeys.definitions import load_definitions  # noqa: E402
from journeys.events import parse_occurred_at  # noqa: E402
from journeys.settings import KafkaConfig, WarehouseConfig  # noqa: E402
from tests.reference.journeys_ref import all_journeys  # noqa: E402
from tests.reference.stitching_ref import reference_sessions, resolve, split  # noqa: E402

try:  # the layout of this commit, or the one before stream/ got its floors
    from stream.agents.app import committed_stages
    from stream.agents.stats import late_in_stats_line
    from stream.engine.identity import JUNK_IDS
except ImportError:  # pragma: no cover - the older layout, for before/after figures
    from stream.app import committed_stages  # type: ignore[no-redef]
    from stream.identity import JUNK_IDS  # type: ignore[no-redef]
    from stream.stats import late_in_stats_line  # type: ignore[no-redef]
from warehouse.connect import connect  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
LATENESS_MS = 300_000


def broker(kind: str) -> Any:
    if kind == "kafka":
        from deploy.local.kafka import LocalKafka
        return LocalKafka()
    from deploy.local.broker import LocalBroker
    return LocalBroker()


def ensure_topics(kafka: KafkaConfig) -> None:
    try:
        from journeys.topics import ensure_journey_topics
    except ImportError:  # pragma: no cover - older layout
        from deploy.topics import ensure_journey_topics  # type: ignore[no-redef]
    ensure_journey_topics(kafka)


def events(n: int, seed: int) -> list[dict[str, Any]]:
    """n generated events over as many days as the volume needs."""
    config = GeneratorConfig(seed=seed, start_ms=1_772_323_200_000,
                             duration_ms=30 * 86_400_000, visitors_per_hour=20_000.0,
                             max_events=n, id_prefix="b")
    return list(generate_events(config))


def fillers(at_ms: int, partitions: int) -> list[tuple[int, dict[str, Any]]]:
    """(raw partition, event): one per raw partition, with a customer id in the by-customer
    partition of the same number (so every by-customer partition moves on too)."""
    out, k = [], 0
    while len(out) < partitions:
        key = f"filler-{k}"
        if zlib.crc32(key.encode()) % partitions == len(out):
            out.append((len(out), {"event_id": f"fill-{k}", "type": "page_view",
                                   "channel": "web", "occurred_at": at_ms,
                                   "customer_id": key, "anonymous_id": None}))
        k += 1
    return out


async def produce(kafka: KafkaConfig, payloads: list[bytes],
                  fill: list[tuple[int, dict[str, Any]]]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks=1,
                                linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    started = time.perf_counter()
    try:
        futures = []
        for i, value in enumerate(payloads):
            futures.append(await producer.send(kafka.raw_topic, value,
                                               key=str(i % 997).encode()))
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures = []
        for p, e in fill:
            futures.append(await producer.send(kafka.raw_topic, orjson.dumps(e), partition=p))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """High-water marks from Fetch responses (right on Kafka and on Tansu, whose
    ListOffsets answers short of the end), one partition at a time."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_wait_ms=20, max_partition_fetch_bytes=1024)
    try:
        out = {}
        for p in range(partitions):
            tp = TopicPartition(topic, p)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            deadline = time.monotonic() + 10
            while consumer.highwater(tp) is None and time.monotonic() < deadline:
                consumer.poll(timeout_ms=100, max_records=1)
            hw = consumer.highwater(tp)
            if hw is None:
                raise RuntimeError(f"no high-water mark for {topic}[{p}]")
            out[p] = int(hw)
        return out
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, topic: str, parts: list[int]) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in parts}
    finally:
        consumer.close()


def wait_done(kafka: KafkaConfig, app_id: str, procs: list[subprocess.Popen],
              started: float, timeout: float, log: Path) -> float | None:
    """Stage by stage: each group committed its topic's end offsets as they were when the
    stage before it got there (the handovers topic twice: the customer stage reads and
    writes it). Prints progress; returns the time of the first raw commit."""
    first = None
    for topic, group in committed_stages(kafka, app_id):
        again = getattr(kafka, "handovers_topic", kafka.by_customer_topic)  # older layout
        for _ in range(2 if topic == again else 1):
            ends = end_offsets(kafka.bootstrap_servers, topic, kafka.partitions)
            while True:
                for p in procs:
                    if p.poll() is not None:
                        raise SystemExit(f"a worker exited; see {log}")
                done = committed(kafka.bootstrap_servers, group, topic, list(ends))
                now = time.perf_counter() - started
                if first is None and topic == kafka.raw_topic and sum(done.values()):
                    first = now
                print(f"  {now:6.1f} s  {topic.split('.')[-1]} "
                      f"{sum(done.values()):,}/{sum(ends.values()):,}", flush=True)
                if all(done[p] >= e for p, e in ends.items()):
                    break
                if now > timeout:
                    raise SystemExit("timed out")
                time.sleep(1.0)
    return first


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except OSError:
        return 0.0


def pyspy(procs: list[subprocess.Popen], where: str | None) -> list[subprocess.Popen]:
    """With BENCH_PYSPY=DIR: sample each worker with py-spy (attached, non-blocking, so
    the worker's own CPU time stays its own), raw stacks to DIR/worker<i>.txt, for
    bench/profile_report.py."""
    if not where:
        return []
    spy = Path(sys.executable).with_name("py-spy")
    return [subprocess.Popen([str(spy), "record", "--pid", str(p.pid), "--nonblocking",
                              "-r", "100", "-f", "raw", "-o", f"{where}/worker{i}.txt"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i, p in enumerate(procs)]


Ref = tuple[set[Any], dict[str, str]]


def stop_workers(procs: list[subprocess.Popen]) -> None:
    """SIGTERM the workers still running, SIGKILL those that do not stop in 30 s."""
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)


def results(ch: Any, database: str) -> tuple[set[Any], dict[str, str], int]:
    """(sessions, instance id -> status, distinct touchpoints) in the warehouse, the
    fillers left out."""
    wh = connect(WarehouseConfig(backend="server", host=ch.host, port=ch.tcp_port,
                                 database=database), create_database=False)
    try:
        sessions = {(r[0], int(r[1]), int(r[2]), int(r[3])) for r in wh.query(
            f"SELECT customer_id, started_at_ms, ended_at_ms, events FROM {database}.sessions "
            "FINAL WHERE deleted = 0 AND customer_id NOT LIKE 'filler-%'")}
        instances = {r[0]: r[1] for r in wh.query(
            f"SELECT instance_id, status FROM {database}.journey_instances FINAL "
            "WHERE deleted = 0")}
        touchpoints = int(wh.query(f"SELECT count() FROM {database}.touchpoints FINAL")[0][0])
    finally:
        wh.close()
    return sessions, instances, touchpoints


def references(evs: list[dict[str, Any]], watermark: int) -> dict[str, Ref]:
    """Reference sessions (customer, start, end, events) and instances (id -> status):
    the product's semantics (split at the link's time) and full retroactivity."""
    defs = load_definitions()
    wire = [{**e, "occurred_at": parse_occurred_at(e["occurred_at"])} for e in evs]
    real = resolve(wire, set(JUNK_IDS))
    full = {i.instance_id: i.status for i in all_journeys(defs.journeys, real, watermark)}
    insts, sessions = split(defs, wire, set(JUNK_IDS), watermark)
    return {"split at the link (the product's semantics)": (
                sessions, {i.instance_id: i.status for i in insts}),
            "full retroactivity": (reference_sessions(real, defs.sessions.gap_ms), full)}


def late_events(log: Path, pids: list[int]) -> int:
    """Sum over workers of the last `late=` of their stats lines (cumulative counters)."""
    last: dict[int, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        n = late_in_stats_line(line)
        if n is not None:
            last[next((p for p in pids if f"[{p}]" in line), -1)] = n
    return sum(last.values())


@dataclass
class ProductRun:
    """What one run of the workers took and left in the warehouse."""

    total_s: float  # from worker start until every stage committed everything
    first_s: float | None  # from worker start until the first raw commit
    cpu_s: float  # all workers, start-up included
    late: int
    sessions: set[Any]
    instances: dict[str, str]
    touchpoints: int


def worker_env(kafka: KafkaConfig, broker_kind: str, ch: Any, *, database: str, app_id: str,
               guarantee: str, flush_interval: float) -> dict[str, str]:
    """The workers' environment: this process's minus any JOURNEYS_* but the state store
    (JOURNEYS_STATE_STORE=memory measures the memory store; default: the product's,
    RocksDB since 2026-12-04), plus the bench's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("JOURNEYS_") or k == "JOURNEYS_STATE_STORE"}
    env.update({
        "JOURNEYS_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        # Tansu refuses aiokafka's idempotent producer (InitProducerId)
        "JOURNEYS_KAFKA__IDEMPOTENT_PRODUCER": str(broker_kind == "kafka").lower(),
        "JOURNEYS_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
        "JOURNEYS_KAFKA__PROCESSING_GUARANTEE": guarantee,
        "JOURNEYS_KAFKA__PARTITIONS": str(kafka.partitions),
        "JOURNEYS_WAREHOUSE__BACKEND": "server",
        "JOURNEYS_WAREHOUSE__HOST": ch.host,
        "JOURNEYS_WAREHOUSE__PORT": str(ch.tcp_port),
        "JOURNEYS_WAREHOUSE__DATABASE": database,
        "JOURNEYS_APP_ID": app_id,
        "JOURNEYS_FLUSH_INTERVAL_S": str(flush_interval),
        "JOURNEYS_ALLOWED_LATENESS_MS": str(LATENESS_MS),
        # the references are taken at the fillers' watermark: an idle source would
        # move on with the wall clock and settle a few more deadlines than that
        "JOURNEYS_SOURCE_IDLE_MS": str(86_400_000),
    })
    return env


def run_product(kafka: KafkaConfig, broker_kind: str, ch: Any, workers: int, work: Path, *,
                database: str = "bench", app_id: str = "bench-worker",
                guarantee: str = "at_least_once", flush_interval: float = 0.5,
                timeout: float = 1800.0) -> ProductRun:
    """Start `workers` stream workers on the already produced raw topic, wait until every
    stage committed everything, stop them; their CPU, late events and warehouse rows."""
    env = worker_env(kafka, broker_kind, ch, database=database, app_id=app_id,
                     guarantee=guarantee, flush_interval=flush_interval)
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "workers.log"
    log = log_path.open("wb")
    started = time.perf_counter()
    profile = os.environ.get("BENCH_PROFILE")  # a directory: cProfile each worker
    cmd = [sys.executable, "-m", "stream", "--loglevel", "info"]  # stats lines: late=
    procs = [subprocess.Popen(cmd if not profile else [
                 sys.executable, "-m", "cProfile", "-o", f"{profile}/worker{i}.prof",
                 "-m", "stream", "--loglevel", "info"],
                              cwd=ROOT, env={**env, "JOURNEYS_DATA_DIR": str(work / f"w{i}")},
                              stdout=log, stderr=subprocess.STDOUT)
             for i in range(workers)]
    spies = pyspy(procs, os.environ.get("BENCH_PYSPY"))
    try:
        first = wait_done(kafka, app_id, procs, started, timeout, log_path)
        total = time.perf_counter() - started
        cpu = sum(cpu_seconds(p.pid) for p in procs)
    finally:
        stop_workers(procs)
        for spy in spies:
            spy.wait(60)
        log.close()
    sessions, instances, touchpoints = results(ch, database)
    return ProductRun(total, first, cpu, late_events(log_path, [p.pid for p in procs]),
                      sessions, instances, touchpoints)


def print_exactness(refs: dict[str, Ref], got_sessions: set[Any],
                    got_instances: dict[str, str]) -> None:
    """Sessions and instances against each reference; BENCH_DIFF=DIR writes what differs."""
    diff_dir = os.environ.get("BENCH_DIFF")  # a directory: what differs, as JSON
    for name, (want_sessions, want_instances) in refs.items():
        same = sum(1 for i, s in want_instances.items() if got_instances.get(i) == s)
        if diff_dir:
            Path(diff_dir, name.split()[0] + ".json").write_bytes(orjson.dumps({
                "instances": {i: [want_instances.get(i), got_instances.get(i)]
                              for i in {*want_instances, *got_instances}
                              if want_instances.get(i) != got_instances.get(i)},
                "sessions": {"missing": sorted(want_sessions - got_sessions),
                             "extra": sorted(got_sessions - want_sessions)}}))
        print(f"  vs {name}: sessions {len(got_sessions & want_sessions):,} identical of "
              f"{len(want_sessions):,}; instances {same:,} identical (id, status) of "
              f"{len(want_instances):,}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--broker", choices=("kafka", "tansu"), default="kafka")
    ap.add_argument("--flush-interval", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--guarantee", choices=("at_least_once", "exactly_once"),
                    default="at_least_once", help="Faust processing_guarantee of the workers")
    ap.add_argument("--timeout", type=float, default=1800.0)
    args = ap.parse_args()

    print(f"generating {args.events:,} events …", flush=True)
    evs = events(args.events, args.seed)
    payloads = [orjson.dumps(e) for e in evs]
    end = max(parse_occurred_at(e["occurred_at"]) for e in evs) + 3 * 86_400_000
    refs = references(evs, end - LATENESS_MS)
    work = Path(tempfile.mkdtemp(prefix="bench_stream_"))
    with broker(args.broker) as b, LocalClickHouse() as ch:
        kafka = KafkaConfig(bootstrap_servers=b.bootstrap_servers, topic_prefix="bench",
                            partitions=args.partitions)
        ensure_topics(kafka)
        secs = asyncio.run(produce(kafka, payloads, fillers(end, args.partitions)))
        print(f"produced {len(payloads):,} events to {kafka.raw_topic} in {secs:.1f} s "
              f"({args.partitions} partitions, {args.broker})", flush=True)
        run = run_product(kafka, args.broker, ch, args.workers, work,
                          guarantee=args.guarantee, flush_interval=args.flush_interval,
                          timeout=args.timeout)
    total, first, cpu, late = run.total_s, run.first_s, run.cpu_s, run.late
    got_sessions, got_instances, touchpoints = run.sessions, run.instances, run.touchpoints
    steady = total - (first or 0.0)
    print(f"\n{len(payloads):,} events, {args.workers} worker(s), {args.partitions} partitions, "
          f"{args.broker}; {touchpoints:,} touchpoints in ClickHouse")
    print(f"  end to end: {total:.1f} s from worker start = {len(payloads) / total:,.0f} events/s;"
          f" from the first commit: {steady:.1f} s = {len(payloads) / steady:,.0f} events/s")
    print(f"  worker CPU: {cpu:.1f} s = {cpu * 1e6 / len(payloads):,.0f} us per event "
          f"({len(payloads) / cpu:,.0f} events per CPU-second)")
    print(f"  late events: {late:,}")
    print(f"  sessions: {len(got_sessions):,}; journey instances: {len(got_instances):,}")
    print_exactness(refs, got_sessions, got_instances)

if __name__ == "__main__":
    main()
