"""Worker memory under open state: RSS per open journey, and one very long journey.

Starts Apache Kafka and a ClickHouse server (127.0.0.1, stopped at the end), then a
backlog through one real worker (`python -m stream`, default definitions):

- `--customers N` (default 200,000): N customers, each with one `product_view` (the
  entry of the purchase journey, abandon after 24 h) within one hour, so after the
  backlog N journey instances and N sessions are open in the worker's state;
- `--long-events K` (default 0): one more customer with K events in one journey (the
  entry, then `page_view`s a second apart: off-path detours; all before the others, so
  none is late), the "one customer with 500k events" case of docs/reliability.md.

Prints the worker's RSS when idle, after the backlog (VmRSS) and the peak (VmHWM), the
RSS per open journey, the largest changelog record written, and whether every event
was processed. Figures: docs/reliability.md "Figures". Run it alone on the machine.

    .venv/bin/python bench/bench_state_rss.py --customers 1000000 --long-events 500000
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
from pathlib import Path

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_stream import (  # noqa: E402
    ensure_topics,
    fillers,
    produce,
    stop_workers,
    wait_done,
)
from trace_worker import SNAP_SIGNAL  # noqa: E402

from deploy.local.clickhouse import LocalClickHouse  # noqa: E402
from deploy.local.kafka import LocalKafka  # noqa: E402
from journeys.settings import KafkaConfig, WarehouseConfig  # noqa: E402
from warehouse.connect import connect  # noqa: E402

START = 1_772_323_200_000
APP = "rss-worker"


def payloads(customers: int, long_events: int) -> list[bytes]:
    out = [orjson.dumps({  # before the others, so none of it is late
        "event_id": f"l{j}", "type": "product_view" if j == 0 else "page_view",
        "channel": "web", "occurred_at": START - (long_events - j) * 1000,
        "customer_id": "long-one"}) for j in range(long_events)]
    out.extend(orjson.dumps({"event_id": f"o{i}", "type": "product_view", "channel": "web",
                             "occurred_at": START + (i * 3_600_000) // max(customers, 1),
                             "customer_id": f"c{i}"}) for i in range(customers))
    return out


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0]) // 1024
    return out


def largest_records(bootstrap: str, topics: list[str]) -> dict[str, tuple[int, int]]:
    """(the largest record, all records' value bytes) of each topic, read from the
    start (the alert-state changelog's total is what docs/reliability.md "What grows
    per open journey" compares)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_bytes=64 * 1024 * 1024,
                             max_partition_fetch_bytes=16 * 1024 * 1024)
    try:
        out: dict[str, tuple[int, int]] = {}
        for topic in topics:
            parts = [TopicPartition(topic, p)
                     for p in sorted(consumer.partitions_for_topic(topic) or ())]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            ends = consumer.end_offsets(parts)
            biggest = total = 0
            while any(consumer.position(tp) < ends[tp] for tp in parts):
                for msgs in consumer.poll(timeout_ms=1000, max_records=5000).values():
                    sizes = [len(m.value or b"") for m in msgs]
                    biggest, total = max([biggest, *sizes]), total + sum(sizes)
            out[topic] = (biggest, total)
        return out
    finally:
        consumer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=200_000)
    ap.add_argument("--long-events", type=int, default=0)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--trace", type=int, default=0, metavar="N",
                    help="run the worker under tracemalloc (slower) and print the N "
                         "allocation sites that grew most from idle to after the backlog")
    ap.add_argument("--store", choices=("memory", "rocksdb"),
                    default=os.environ.get("JOURNEYS_STATE_STORE", "rocksdb"),
                    help="the worker's JOURNEYS_STATE_STORE (default: this process's, else "
                         "rocksdb, the product's default since 2026-12-04; memory before). Before, the worker got no JOURNEYS_ variable of this "
                         "process: every run measured the memory store")
    ap.add_argument("--probe", action="store_true",
                    help="run the worker with bench/probe_worker.py and take its RSS apart "
                         "(glibc malloc, pymalloc, RocksDB, the decoded cache) idle and after")
    ap.add_argument("--memray", action="store_true",
                    help="run the worker under memray (pip install memray; aggregated "
                         "capture, Python allocators traced) and write its peak-memory "
                         "flamegraph: which stacks held the most at the RSS high-water")
    args = ap.parse_args()
    # `timeout` and CI send SIGTERM: exit through the `finally`s, so the worker, the broker
    # and ClickHouse are stopped (a killed run used to leave the worker running)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    values = payloads(args.customers, args.long_events)
    end = START + 3_600_000 + 60_000  # every journey still open (abandon after 24 h)
    work = Path(tempfile.mkdtemp(prefix="bench_rss_"))
    with LocalKafka() as b, LocalClickHouse() as ch:
        kafka = KafkaConfig(bootstrap_servers=b.bootstrap_servers, topic_prefix="rss",
                            partitions=args.partitions)
        ensure_topics(kafka)
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_")}
        env.update({
            "JOURNEYS_KAFKA__BOOTSTRAP_SERVERS": b.bootstrap_servers,
            "JOURNEYS_KAFKA__TOPIC_PREFIX": "rss",
            "JOURNEYS_KAFKA__PARTITIONS": str(args.partitions),
            "JOURNEYS_WAREHOUSE__BACKEND": "server", "JOURNEYS_WAREHOUSE__HOST": ch.host,
            "JOURNEYS_WAREHOUSE__PORT": str(ch.tcp_port),
            "JOURNEYS_WAREHOUSE__DATABASE": "rss", "JOURNEYS_APP_ID": APP,
            "JOURNEYS_SOURCE_IDLE_MS": str(86_400_000), "JOURNEYS_DATA_DIR": str(work / "w"),
            "JOURNEYS_STATE_STORE": args.store,
        })
        log_path = work / "worker.log"
        with log_path.open("wb") as log:
            cmd = [sys.executable, "-m", "stream", "--loglevel", "warning"]
            if args.trace:
                cmd[1:3] = [str(ROOT / "bench" / "trace_worker.py"), str(work)]
            elif args.probe:
                cmd[1:3] = [str(ROOT / "bench" / "probe_worker.py"), str(work)]
            elif args.memray:
                cmd[1:1] = ["-m", "memray", "run", "--aggregate", "--trace-python-allocators",
                            "-q", "-o", str(work / "worker.memray")]
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
        try:
            time.sleep(60 if args.trace else 15)  # started, assigned, idle
            idle = status(proc.pid)
            print(f"worker idle: RSS {idle['VmRSS']:,} MiB", flush=True)
            if args.trace or args.probe:
                snap(proc, work, 1, "probe" if args.probe else "snap")
            secs = asyncio.run(produce(kafka, values, fillers(end, args.partitions)))
            print(f"produced {len(values):,} events in {secs:.1f} s", flush=True)
            started = time.perf_counter()
            wait_done(kafka, APP, [proc], started, args.timeout, log_path)
            took = time.perf_counter() - started
            after = status(proc.pid)
            if args.trace or args.probe:
                snap(proc, work, 2, "probe" if args.probe else "snap")
        finally:
            stop_workers([proc])
        wh = connect(WarehouseConfig(backend="server", host=ch.host, port=ch.tcp_port,
                                     database="rss"), create_database=False)
        try:
            opened = wh.query("SELECT status, count() FROM rss.journey_instances FINAL "
                              "WHERE deleted = 0 GROUP BY status")
            long_row = wh.query("SELECT length(path_types), furthest_step, status "
                                "FROM rss.journey_instances FINAL WHERE deleted = 0 AND "
                                "customer_id = 'long-one'")
            touchpoints = wh.query("SELECT count() FROM rss.touchpoints")[0][0]
        finally:
            wh.close()
        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap_servers)
        try:
            topics = [t for t in admin.list_topics() if "changelog" in t]
        finally:
            admin.close()
        biggest = largest_records(b.bootstrap_servers, topics)
    opened_n = sum(n for s, n in opened if s == "open")
    print(f"\n{args.customers:,} customers with one open journey each, {args.store} store"
          + (f", one customer with {args.long_events:,} events" if args.long_events else ""))
    print(f"  processed in {took:.1f} s; touchpoints {touchpoints:,} of {len(values):,} "
          f"(+{args.partitions} fillers)")
    print(f"  journey instances by status: {dict(opened)}")
    if long_row:
        print(f"  the long journey: path length {long_row[0][0]:,}, furthest step "
              f"{long_row[0][1]}, {long_row[0][2]}")
    grew = after["VmRSS"] - idle["VmRSS"]
    print(f"  worker RSS: idle {idle['VmRSS']:,} MiB, after {after['VmRSS']:,} MiB "
          f"(peak {after['VmHWM']:,} MiB); grew {grew:,} MiB = "
          f"{grew * 1024 * 1024 / max(opened_n, 1):,.0f} bytes per open journey")
    for topic, (size, total) in sorted(biggest.items()):
        print(f"  largest record in {topic}: {size:,} bytes (all its records: "
              f"{total / 2**20:,.1f} MiB)")
    if args.trace:
        grown(work, args.trace, max(opened_n, 1))
    if args.probe:
        probed(work, max(opened_n, 1))
    if args.memray:
        html = work / "worker-peak.html"
        subprocess.run([sys.executable, "-m", "memray", "flamegraph", "-f", "-o", str(html),
                        str(work / "worker.memray")], check=False)
        print(f"  memray capture {work / 'worker.memray'}, peak flamegraph {html}")


def snap(proc: subprocess.Popen, work: Path, n: int, kind: str = "snap") -> None:
    """Have the traced or probed worker write snapshot n (bench/trace_worker.py,
    bench/probe_worker.py) and wait for it."""
    os.kill(proc.pid, SNAP_SIGNAL)
    path = work / (f"snap-{n}.pickle" if kind == "snap" else f"probe-{n}.json")
    for _ in range(600):
        if path.exists():
            size = -1
            while size != path.stat().st_size:  # written whole
                size = path.stat().st_size
                time.sleep(1)
            return
        time.sleep(0.5)
    raise RuntimeError(f"no tracemalloc snapshot {path}")


def probed(work: Path, per: int) -> None:
    """The probe's components idle and after the backlog, and what each grew per open
    journey (bench/probe_worker.py)."""
    import json

    a, b = (json.loads((work / f"probe-{n}.json").read_text()) for n in (1, 2))
    rows = [("VmRSS", "status", "VmRSS"), ("RssAnon", "status", "RssAnon"),
            ("RssFile", "status", "RssFile"),
            ("glibc malloc in use", "malloc", "in_use"),
            ("glibc malloc free, kept", "malloc", "free_kept"),
            ("glibc malloc mmapped", "malloc", "mmapped"),
            ("pymalloc arenas", "pymalloc", "arena_bytes"),
            ("pymalloc blocks in use", "pymalloc", "allocated_blocks_bytes"),
            ("RocksDB memtables", "rocksdb_total", "cur-size-all-mem-tables"),
            ("RocksDB block caches", "rocksdb_total", "block-cache-usage"),
            ("RocksDB table readers", "rocksdb_total", "estimate-table-readers-mem"),
            ("VmRSS after malloc_trim", "after_trim", "VmRSS")]
    print("\n  RSS taken apart (bench/probe_worker.py): idle -> after, per open journey")
    for label, group, key in rows:
        x, y = a[group].get(key, 0), b[group].get(key, 0)
        print(f"    {label:26} {x / 2**20:8,.1f} MiB -> {y / 2**20:8,.1f} MiB "
              f"{(y - x) / per:+8,.0f} B/journey")
    print(f"    Python objects (gc)        {a['objects']:,} -> {b['objects']:,}")
    print(f"    decoded cache              {a['cache']} -> {b['cache']}")
    print(f"    RocksDB databases: {len(b['rocksdb'])}")
    (work / "probe.json").write_text(json.dumps({"idle": a, "after": b}))
    print(f"    (both probes: {work / 'probe.json'})")


def grown(work: Path, top: int, per: int) -> None:
    """The allocation sites that grew most between the two snapshots."""
    import tracemalloc

    a = tracemalloc.Snapshot.load(str(work / "snap-1.pickle"))
    b = tracemalloc.Snapshot.load(str(work / "snap-2.pickle"))
    diff = b.compare_to(a, "traceback")
    print(f"\n  Python heap: idle {sum(s.size for s in a.statistics('filename')) >> 20} MiB, "
          f"after {sum(s.size for s in b.statistics('filename')) >> 20} MiB; grew most:")
    for stat in diff[:top]:
        inner = stat.traceback[-1]  # oldest first: the allocating frame, then ours
        ours = [f for f in list(stat.traceback)[:-1] if str(ROOT) in f.filename]
        where = " < ".join(f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno}"
                           for f in [inner, *ours[-2:][::-1]])
        print(f"    {stat.size_diff / per:+8,.0f} B/journey {stat.size_diff >> 20:+5,} MiB "
              f"{stat.count_diff:+9,} blocks  {where}")
    peak = work / "snap-peak.pickle"
    if peak.exists():
        c = tracemalloc.Snapshot.load(str(peak))
        print(f"\n  Python heap at its peak ({(work / 'snap-peak.txt').read_text()} bytes "
              "traced, bench/trace_worker.py), above idle:")
        for stat in c.compare_to(a, "traceback")[:top]:
            inner = stat.traceback[-1]
            ours = [f for f in list(stat.traceback)[:-1] if str(ROOT) in f.filename]
            where = " < ".join(f"{Path(f.filename).parent.name}/{Path(f.filename).name}:"
                               f"{f.lineno}" for f in [inner, *ours[-3:][::-1]])
            print(f"    {stat.size_diff >> 20:+5,} MiB {stat.count_diff:+9,} blocks  {where}")


if __name__ == "__main__":
    main()
